//! Crash safety of training through the `intq` binary, on a tiny synthetic IDX data set: SIGKILL
//! inside a checkpoint write (at points chosen by the test-only hook `INTQ_TEST_CKPT_PAUSE`, see
//! `intq_train::checkpoint`) or between steps never leaves a corrupt checkpoint, `--resume` then
//! reaches bit for bit the weights of an uninterrupted run with the same seed, and a full disk (a
//! real EFBIG from the OS under RLIMIT_FSIZE) is a clear error that keeps the previous checkpoint.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use intq_train::checkpoint;
use intq_train::ckpt_file;
use intq_train::layers::LayerOpts;

/// 128 training images at batch 32: 4 steps per epoch, 8 in the 2-epoch runs; with
/// `--ckpt-every 2` the checkpoint is written at steps 2 and 6 (mid-epoch) and 4 and 8 (ends).
const TRAIN: usize = 128;

fn scratch(name: &str) -> PathBuf {
    common::scratch("crash_resume", name)
}

/// Class `k` is a bright bar at a class-specific row or column over noise.
fn images(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    use intq_engine::examples::Rng as _;
    let mut rng = intq_engine::examples::seeded(seed);
    let mut px = Vec::with_capacity(n * 784);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 10;
        labels.push(k as u8);
        for y in 0..28 {
            for x in 0..28 {
                let line = if k < 5 { y } else { x };
                let on = (4 + 5 * (k % 5)..7 + 5 * (k % 5)).contains(&line);
                px.push(if on { 215 } else { 0 } + (rng.next_u64() % 40) as u8);
            }
        }
    }
    (px, labels)
}

fn data_dir(root: &Path) -> PathBuf {
    let d = root.join("data");
    let f = d.join("fashion-mnist");
    std::fs::create_dir_all(&f).unwrap();
    for (split, n, seed) in [("train", TRAIN, 1), ("t10k", 32, 2)] {
        let (px, labels) = images(n, seed);
        common::write_split(&f, split, &px, &labels);
    }
    d
}

fn train_args(data: &Path, out: &Path, epochs: usize) -> Vec<String> {
    [
        "train",
        "--model",
        "small-cnn",
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--seed",
        "7",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn intq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_intq"))
}

fn run_ok(args: &[String]) {
    let o = intq().args(args).output().expect("run intq");
    assert!(
        o.status.success(),
        "intq {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs intq with `INTQ_TEST_CKPT_PAUSE=pause` and SIGKILLs it as soon as it reports being
/// paused there, i.e. inside the checkpoint write.
fn kill_at(args: &[String], pause: &str) {
    let mut child = intq()
        .args(args)
        .env("INTQ_TEST_CKPT_PAUSE", pause)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run intq");
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("intq-test-hook: paused at") {
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            assert!(!status.success());
            return;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    panic!("intq {args:?} never paused at {pause} (exit {status}):\n{seen}");
}

/// (epochs done, batches into the next epoch, steps) of the checkpoint at `path`, which must
/// load in full: parse, metadata, every tensor of the network with its shape.
fn state(path: &Path) -> (usize, usize, u64) {
    let l = checkpoint::load(path, LayerOpts::default(), &intq_train::train_device())
        .unwrap_or_else(|e| panic!("{} does not load after the kill: {e}", path.display()));
    (l.meta.epoch, l.meta.epoch_batches, l.meta.step)
}

type Raw = Vec<(String, String, Vec<usize>, Vec<u8>)>;

/// Every tensor of a checkpoint, raw bytes (bit-for-bit comparison).
fn tensors(path: &Path) -> Raw {
    let bytes = std::fs::read(path).unwrap();
    let f = ckpt_file::parse(&bytes, path).unwrap();
    f.raw_tensors()
        .into_iter()
        .map(|(n, d, s, b)| (n, format!("{d:?}"), s, b.to_vec()))
        .collect()
}

fn assert_same(a: &Raw, b: &Raw) {
    assert_eq!(
        a.iter().map(|t| &t.0).collect::<Vec<_>>(),
        b.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "tensor names"
    );
    for (x, y) in a.iter().zip(b) {
        assert_eq!((&x.1, &x.2), (&y.1, &y.2), "dtype/shape of {}", x.0);
        assert!(
            x.3 == y.3,
            "{} differs between the uninterrupted and the killed-and-resumed run",
            x.0
        );
    }
}

#[test]
fn kill_during_checkpoint_writes_then_resume_equals_an_uninterrupted_run() {
    let root = scratch("kill");
    let data = data_dir(&root);
    let a = root.join("a.ckpt");
    let b = root.join("b.ckpt");
    let tmp = checkpoint::temp_path(&b);
    // A: uninterrupted, checkpoints at epoch ends only.
    run_ok(&train_args(&data, &a, 2));
    assert_eq!(state(&a), (2, 0, 8));
    let expected = tensors(&a);

    let mut args = train_args(&data, &b, 2);
    args.extend(["--ckpt-every".to_string(), "2".to_string()]);
    let mut resume = args.clone();
    resume.push("--resume".into());

    // Killed half-way through the first write ever: no checkpoint rather than a corrupt one.
    kill_at(&args, "1:partial");
    assert!(
        !b.exists(),
        "a checkpoint appeared from a killed first write"
    );
    let partial = std::fs::metadata(&tmp)
        .expect("the partial temp file")
        .len();
    assert!(partial > 0);
    let o = intq().args(&resume).output().unwrap();
    assert!(!o.status.success(), "--resume without a checkpoint");
    assert!(String::from_utf8_lossy(&o.stderr).contains("b.ckpt"));

    // Start over; killed half-way through the second write (step 4): step 2's stays.
    kill_at(&args, "2:partial");
    assert_eq!(state(&b), (0, 2, 2));
    assert!(std::fs::metadata(&tmp).unwrap().len() < std::fs::metadata(&b).unwrap().len());

    // Resumed from step 2; killed with the end-of-epoch checkpoint complete but not renamed.
    kill_at(&resume, "1:synced");
    assert_eq!(
        state(&b),
        (0, 2, 2),
        "the previous checkpoint stays until the rename"
    );
    assert_eq!(state(&tmp), (1, 0, 4), "the complete, unrenamed temp file");

    // Resumed from step 2 again; killed right after renaming step 6's checkpoint.
    kill_at(&resume, "2:renamed");
    assert_eq!(state(&b), (1, 2, 6));
    assert!(!tmp.exists());

    // 2 batches into an epoch cannot continue where an epoch has 2 batches (batch size 64).
    let mut other = resume.clone();
    let at = other.iter().position(|a| a == "--batch-size").unwrap();
    other[at + 1] = "64".into();
    let o = intq().args(&other).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resume with the same data and batch size"),
        "{err}"
    );
    assert_eq!(
        state(&b),
        (1, 2, 6),
        "a refused resume leaves the checkpoint"
    );

    // Killed between steps, wherever it is: whatever is on disk loads.
    let mut child = intq()
        .args(&resume)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("resuming"), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let _ = child.kill();
    child.wait().unwrap();
    let (epoch, batches, step) = state(&b);
    assert!([(1, 2, 6), (2, 0, 8)].contains(&(epoch, batches, step)));

    // Resumed to the end: the same weights, momentum and statistics as run A, bit for bit.
    run_ok(&resume);
    assert_eq!(state(&b), (2, 0, 8));
    assert!(!tmp.exists(), "a temp file was left behind");
    assert_same(&expected, &tensors(&b));
}

#[test]
fn qat_killed_in_a_checkpoint_write_resumes_to_the_same_weights() {
    let root = scratch("qat");
    let data = data_dir(&root);
    let float = root.join("float.ckpt");
    let mut fargs = train_args(&data, &float, 1);
    fargs.extend(["--limit-train".to_string(), "64".to_string()]);
    run_ok(&fargs);
    let qat = |out: &Path| -> Vec<String> {
        let mut v = train_args(&data, out, 2);
        v[0] = "qat".into();
        v.splice(1..3, ["--from".to_string(), float.to_str().unwrap().into()]);
        v.extend(
            ["--limit-train", "64", "--ckpt-every", "1"]
                .iter()
                .map(|s| s.to_string()),
        );
        v
    };
    let a = root.join("a.ckpt");
    let b = root.join("b.ckpt");
    run_ok(&qat(&a));
    // 2 steps per epoch: writes at steps 1, 2 (end), 3, 4 (end).
    kill_at(&qat(&b), "3:synced");
    assert_eq!(state(&b), (1, 0, 2));
    let mut resume = qat(&b);
    resume.push("--resume".into());
    run_ok(&resume);
    assert_eq!(state(&b), (2, 0, 4));
    assert_same(&tensors(&a), &tensors(&b));
}

#[cfg(unix)]
#[test]
fn a_full_disk_is_a_clear_error_that_keeps_the_previous_checkpoint() {
    let root = scratch("full");
    let data = data_dir(&root);
    let out = root.join("run.ckpt");
    run_ok(&train_args(&data, &out, 1));
    let before = std::fs::read(&out).unwrap();
    assert!(before.len() > 64 * 1024);
    // The real OS failure: a 32 KiB file size limit (RLIMIT_FSIZE, in 512-byte blocks) with
    // SIGXFSZ ignored, so the checkpoint's write fails with EFBIG as it would with ENOSPC.
    let mut args = train_args(&data, &out, 2);
    args.push("--resume".into());
    let o = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 64 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_intq"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a failed checkpoint write must fail the run:\n{err}"
    );
    assert!(
        err.contains(&format!("writing checkpoint {} failed", out.display())),
        "{err}"
    );
    assert!(err.contains("disk full or file size limit"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "previous checkpoint changed"
    );
    assert_eq!(state(&out), (1, 0, 4));
    assert!(
        !checkpoint::temp_path(&out).exists(),
        "the temp file was left behind"
    );
}

#[test]
fn resume_takes_the_shard_count_the_checkpoint_records() {
    let root = scratch("shards");
    let data = data_dir(&root);
    let with_shards = |out: &Path, n: &str| {
        let mut v = train_args(&data, out, 2);
        v.extend(["--shards".to_string(), n.to_string()]);
        v
    };
    // A: uninterrupted, single-batch steps (not the default of 2 shards).
    let a = root.join("a.ckpt");
    run_ok(&with_shards(&a, "1"));
    let expected = tensors(&a);

    // B: the same run stopped after 2 steps, then resumed without --shards.
    let b = root.join("b.ckpt");
    let mut first = with_shards(&b, "1");
    first.extend(["--ckpt-every", "2", "--max-steps", "2"].map(String::from));
    run_ok(&first);
    assert_eq!(state(&b).2, 2);
    let mut resume = train_args(&data, &b, 2);
    resume.push("--resume".into());
    let o = intq().args(&resume).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("1 shards"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert_same(&expected, &tensors(&b));

    // C: an explicit, different count is honoured, with a warning that says what it costs.
    let c = root.join("c.ckpt");
    let mut first = with_shards(&c, "1");
    first.extend(["--ckpt-every", "2", "--max-steps", "2"].map(String::from));
    run_ok(&first);
    let mut resume = with_shards(&c, "2");
    resume.push("--resume".into());
    let o = intq().args(&resume).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("--shards 1") && err.contains("2 shards"),
        "{err}"
    );
    assert_eq!(state(&c).2, 8);
}

/// The data set travels with the checkpoint: a float run on MNIST records it, `qat --from`
/// without `--data` fine-tunes on MNIST (the data directory holds only MNIST, so the old
/// default, Fashion-MNIST, would not even load), the QAT checkpoint records it too, and an
/// explicit `--data` that differs gets a warning naming both.
#[test]
fn qat_fine_tunes_on_the_data_set_the_float_checkpoint_recorded() {
    let root = scratch("data_recorded");
    let d = root.join("data");
    let m = d.join("mnist");
    std::fs::create_dir_all(&m).unwrap();
    for (split, n, seed) in [("train", 64, 1), ("t10k", 32, 2)] {
        let (px, labels) = images(n, seed);
        common::write_split(&m, split, &px, &labels);
    }
    let float = root.join("float.ckpt");
    let mut args = train_args(&d, &float, 1);
    // 64 images at batch 32: two steps.
    args.extend(["--data".into(), "mnist".into()]);
    run_ok(&args);
    let recorded = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        ckpt_file::parse(&bytes, p)
            .unwrap()
            .meta
            .data
            .map(|d| d.source)
    };
    assert_eq!(recorded(&float).as_deref(), Some("mnist"));
    let qat = root.join("qat.ckpt");
    let qat_args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "qat",
            "--from",
            float.to_str().unwrap(),
            "--data-dir",
            d.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--quiet",
            "--out",
            qat.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    run_ok(&qat_args(&[]));
    assert_eq!(recorded(&qat).as_deref(), Some("mnist"));
    let o = intq()
        .args(qat_args(&["--data", "fashion-mnist"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("was trained on mnist") && err.contains("--data fashion-mnist"),
        "{err}"
    );
}
