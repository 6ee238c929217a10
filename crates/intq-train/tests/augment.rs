//! Training-time augmentation: crop and flip on one CHW image, the seeded draws, and the spec's
//! parse errors.

use intq_train::augment::{crop, flip, sample_rng, Augment};

/// A 2-channel 3x4 image with distinct nonzero values.
fn image() -> (Vec<f32>, usize, usize, usize) {
    let (c, h, w) = (2, 3, 4);
    let v = (0..c * h * w).map(|i| (i + 1) as f32 / 100.0).collect();
    (v, c, h, w)
}

fn at(v: &[f32], h: usize, w: usize, c: usize, y: usize, x: usize) -> f32 {
    v[(c * h + y) * w + x]
}

#[test]
fn flip_mirrors_each_row() {
    let (img, c, h, w) = image();
    let mut out = img.clone();
    flip(&mut out, c, h, w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                assert_eq!(at(&out, h, w, ch, y, x), at(&img, h, w, ch, y, w - 1 - x));
            }
        }
    }
    flip(&mut out, c, h, w);
    assert_eq!(out, img);
}

#[test]
fn centre_crop_keeps_the_image() {
    let (img, c, h, w) = image();
    for pad in 0..4 {
        assert_eq!(crop(&img, c, h, w, pad, pad, pad), img, "pad {pad}");
    }
}

#[test]
fn off_centre_crop_shifts_with_zeros_entering() {
    let (img, c, h, w) = image();
    // Offset (0, 3) with pad 2: the image moves 2 rows down and 1 column left.
    let out = crop(&img, c, h, w, 2, 0, 3);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let want = if y >= 2 && x + 1 < w {
                    at(&img, h, w, ch, y - 2, x + 1)
                } else {
                    0.0
                };
                assert_eq!(at(&out, h, w, ch, y, x), want, "c{ch} y{y} x{x}");
            }
        }
    }
    // The top two rows and the last column are the zero padding.
    assert!(out[..w].iter().all(|&v| v == 0.0));
    assert!(out.iter().any(|&v| v != 0.0));
}

/// `img` padded by `pad` zeros on every side.
fn padded(img: &[f32], c: usize, h: usize, w: usize, pad: usize) -> Vec<f32> {
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let mut p = vec![0.0; c * ph * pw];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                p[(ch * ph + y + pad) * pw + x + pad] = at(img, h, w, ch, y, x);
            }
        }
    }
    p
}

#[test]
fn every_crop_is_a_window_of_the_padded_image() {
    let (img, c, h, w) = image();
    let pad = 3;
    let p = padded(&img, c, h, w, pad);
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let windows: Vec<Vec<f32>> = (0..=2 * pad)
        .flat_map(|dy| (0..=2 * pad).map(move |dx| (dy, dx)))
        .map(|(dy, dx)| {
            let mut v = Vec::new();
            for ch in 0..c {
                for y in 0..h {
                    let r = (ch * ph + y + dy) * pw + dx;
                    v.extend_from_slice(&p[r..r + w]);
                }
            }
            v
        })
        .collect();
    for dy in 0..=2 * pad {
        for dx in 0..=2 * pad {
            assert_eq!(
                crop(&img, c, h, w, pad, dy, dx),
                windows[dy * (2 * pad + 1) + dx]
            );
        }
    }
    // Random crops (no flip) are such windows too, and more than one offset is drawn.
    let a = Augment::parse("crop:3").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..64 {
        let out = a.apply(&img, c, h, w, &mut sample_rng(7, 0, i));
        let k = windows
            .iter()
            .position(|win| *win == out)
            .expect("a window of the padded image");
        seen.insert(k);
    }
    assert!(seen.len() > 10, "only {} offsets drawn", seen.len());
}

#[test]
fn draws_repeat_with_the_seed_and_change_with_the_epoch() {
    let (img, c, h, w) = image();
    let a = Augment::parse("crop:2,flip").unwrap();
    let run = |seed: u64, epoch: usize| -> Vec<Vec<f32>> {
        (0..32)
            .map(|i| a.apply(&img, c, h, w, &mut sample_rng(seed, epoch, i)))
            .collect()
    };
    assert_eq!(run(5, 1), run(5, 1));
    assert_ne!(run(5, 1), run(5, 2));
    assert_ne!(run(5, 1), run(6, 1));
    // Both sides of the flip coin come up.
    let f = Augment::parse("flip").unwrap();
    let mut mirrored = img.clone();
    flip(&mut mirrored, c, h, w);
    let outs: Vec<Vec<f32>> = (0..32)
        .map(|i| f.apply(&img, c, h, w, &mut sample_rng(5, 0, i)))
        .collect();
    assert!(outs.iter().all(|o| *o == img || *o == mirrored));
    assert!(outs.contains(&img) && outs.contains(&mirrored));
}

#[test]
fn no_augmentation_is_the_identity() {
    let (img, c, h, w) = image();
    for spec in ["", "none"] {
        let a = Augment::parse(spec).unwrap();
        assert!(a.is_none());
        assert_eq!(a, Augment::default());
        assert_eq!(a.apply(&img, c, h, w, &mut sample_rng(1, 2, 3)), img);
    }
    let zero = Augment::parse("crop:0").unwrap();
    assert_eq!(zero.apply(&img, c, h, w, &mut sample_rng(1, 2, 3)), img);
}

#[test]
fn specs_parse() {
    assert_eq!(
        Augment::parse("crop:4,flip").unwrap(),
        Augment {
            crop: Some(4),
            flip: true
        }
    );
    assert_eq!(
        Augment::parse(" flip , crop:2 ").unwrap(),
        Augment {
            crop: Some(2),
            flip: true
        }
    );
}

#[test]
fn bad_specs_say_what_is_wrong() {
    let err = |s: &str| Augment::parse(s).unwrap_err().to_string();
    assert!(
        err("crop:-1").contains("whole number of pixels"),
        "{}",
        err("crop:-1")
    );
    assert!(err("crop:x").contains("whole number of pixels"));
    assert!(err("crop").contains("needs its padding"));
    let e = err("rotate");
    assert!(e.contains("unknown augmentation \"rotate\""), "{e}");
    assert!(e.contains("crop:P"), "{e}");
    assert!(err("flip,,crop:2").contains("unknown augmentation \"\""));
}
