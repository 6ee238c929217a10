//! Training across processes (`mpirun -np N intq train ...`, docs/training.md "Training on
//! several processes"). Without the `mpi` feature: a binary started as one of several ranks
//! refuses to train. With it (needs `mpirun` on the PATH): two ranks train what one process with
//! their shards in all trains, bit for bit where the gradient sum is one addition and within a
//! stated bound where MPI may order it differently; a checkpoint resumes under another rank
//! count; a killed rank ends the job with an error naming it and leaves a loadable checkpoint.

mod common;

/// The refusal of a build without MPI support, whichever launcher variable says so.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_be_one_of_several_ranks() {
    let root = common::scratch("mpi", "refuse");
    let out = root.join("m.ckpt");
    for (var, n) in [("OMPI_COMM_WORLD_SIZE", "2"), ("PMI_SIZE", "4")] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_intq"))
            .args(["train", "--quiet", "--max-steps", "1", "--out"])
            .arg(&out)
            .env(var, n)
            .output()
            .expect("run intq");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{var}={n}: ran\n{err}");
        assert!(
            err.contains(&format!("one of {n} MPI ranks ({var}={n})"))
                && err.contains("--features mpi"),
            "{var}={n}: {err}"
        );
        assert!(!out.exists(), "{var}={n}: wrote a checkpoint");
    }
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    type Raw = Vec<(String, Vec<usize>, Vec<f32>)>;

    /// Every tensor of a checkpoint as f32 values, by name.
    fn tensors(path: &Path) -> Raw {
        let bytes = std::fs::read(path).unwrap();
        let f = intq_train::ckpt_file::parse(&bytes, path).unwrap();
        f.raw_tensors()
            .into_iter()
            .map(|(n, _, s, b)| {
                let v = b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (n, s, v)
            })
            .collect()
    }

    /// The largest difference of two checkpoints' tensors relative to the tensor's largest
    /// magnitude: `max_t max_i |a_i - b_i| / max_i |b_i|`; 0 when they are equal bit for bit.
    fn max_rel_diff(a: &Raw, b: &Raw) -> f64 {
        assert_eq!(
            a.iter().map(|t| (&t.0, &t.1)).collect::<Vec<_>>(),
            b.iter().map(|t| (&t.0, &t.1)).collect::<Vec<_>>(),
            "tensor names and shapes"
        );
        let mut worst = 0f64;
        for (x, y) in a.iter().zip(b) {
            if x.2
                .iter()
                .zip(&y.2)
                .all(|(p, q)| p.to_bits() == q.to_bits())
            {
                continue;
            }
            let scale = y.2.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
            let d =
                x.2.iter()
                    .zip(&y.2)
                    .map(|(p, q)| (*p as f64 - *q as f64).abs())
                    .fold(0.0, f64::max);
            worst = worst.max(d / scale.max(f64::MIN_POSITIVE));
        }
        worst
    }

    /// 129 training images: at batch 32 each epoch ends on a batch of one image, which leaves
    /// rank 1 without a piece (it still takes part in the exchange).
    const TRAIN: usize = 129;

    /// Bound on [`max_rel_diff`] between two ranks of two shards and one process of four after
    /// the runs below (16 steps): only the gradient sum's association differs, `(a + b) + (c +
    /// d)` against `((a + b) + c) + d`, a rounding of about 1e-7 per step that the training
    /// steps carry on.
    const REORDER_BOUND: f64 = 1e-5;

    /// Threads of each rank's pool and of the single process's: different on purpose, since a
    /// run must not depend on the thread count (mpirun binds each rank to one core anyway).
    const RANK_THREADS: &str = "1";
    const THREADS: &str = "2";

    fn mpirun() -> Command {
        let mut c = Command::new("mpirun");
        // Root in containers and CI; a laptop may have fewer slots than ranks.
        c.args(["--allow-run-as-root", "--oversubscribe"]);
        c.env("RAYON_NUM_THREADS", RANK_THREADS);
        c
    }

    fn data_dir(root: &Path) -> PathBuf {
        use intq_engine::examples::Rng as _;
        let d = root.join("data");
        let f = d.join("fashion-mnist");
        std::fs::create_dir_all(&f).unwrap();
        for (split, n, seed) in [("train", TRAIN, 1), ("t10k", 32, 2)] {
            let mut rng = intq_engine::examples::seeded(seed);
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            let px: Vec<u8> = labels
                .iter()
                .flat_map(|&k| {
                    let bright: Vec<u8> = (0..784)
                        .map(|p| {
                            let line = if k < 5 { p / 28 } else { p % 28 };
                            let on = (4 + 5 * (k as usize % 5)..7 + 5 * (k as usize % 5))
                                .contains(&line);
                            if on {
                                215
                            } else {
                                0
                            }
                        })
                        .collect();
                    bright
                })
                .map(|b| b + (rng.next_u64() % 40) as u8)
                .collect();
            common::write_split(&f, split, &px, &labels);
        }
        d
    }

    fn train_args(
        data: &Path,
        out: &Path,
        shards: usize,
        epochs: usize,
        extra: &[&str],
    ) -> Vec<String> {
        let mut v: Vec<String> = [
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
            "3",
            "--quiet",
            "--shards",
            &shards.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn ok(o: Output, what: &str) -> String {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{what} failed:\n{err}");
        err
    }

    fn one(args: &[String]) -> String {
        ok(
            Command::new(env!("CARGO_BIN_EXE_intq"))
                .args(args)
                .env("RAYON_NUM_THREADS", THREADS)
                .output()
                .unwrap(),
            "intq",
        )
    }

    fn ranks(n: usize, args: &[String]) -> String {
        ok(
            mpirun()
                .args(["-np", &n.to_string(), env!("CARGO_BIN_EXE_intq")])
                .args(args)
                .output()
                .expect("run mpirun"),
            "mpirun",
        )
    }

    /// The one summary line (stdout) of rank 0.
    fn summary(args: &[String]) -> String {
        let o = mpirun()
            .args(["-np", "2", env!("CARGO_BIN_EXE_intq")])
            .args(args)
            .output()
            .expect("run mpirun");
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn two_ranks_train_what_one_process_with_their_shards_trains() {
        let root = common::scratch("mpi", "equal");
        let data = data_dir(&root);
        // One shard per rank: the gradient sum is one addition, so the runs are equal bit for
        // bit, momentum, BN statistics and the rank-less short batches included.
        let a = root.join("np2.ckpt");
        let b = root.join("one.ckpt");
        ranks(2, &train_args(&data, &a, 1, 2, &[]));
        one(&train_args(&data, &b, 2, 2, &[]));
        assert_eq!(max_rel_diff(&tensors(&a), &tensors(&b)), 0.0);
        let meta = |p: &Path| {
            let bytes = std::fs::read(p).unwrap();
            let f = intq_train::ckpt_file::parse(&bytes, p).unwrap();
            (f.meta.step, f.meta.shards)
        };
        assert_eq!(meta(&a), (10, Some(2)));
        assert_eq!(meta(&a), meta(&b));
        // The metrics log, written by rank 0 alone, has the same lines but for the timings.
        let lines = |p: &Path| {
            let mut m = p.as_os_str().to_owned();
            m.push(".metrics.jsonl");
            std::fs::read_to_string(PathBuf::from(m))
                .unwrap()
                .lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v.as_object_mut().unwrap().remove("epoch_seconds");
                    v
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&a), lines(&b));
        // QAT: the observers' ranges cross between the ranks too.
        let qa = root.join("qat_np2.ckpt");
        let qb = root.join("qat_one.ckpt");
        let qat = |from: &Path, out: &Path, shards: usize| -> Vec<String> {
            [
                "qat",
                "--from",
                from.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--quiet",
                "--shards",
                &shards.to_string(),
                "--out",
                out.to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        ranks(2, &qat(&b, &qa, 1));
        one(&qat(&b, &qb, 2));
        assert_eq!(max_rel_diff(&tensors(&qa), &tensors(&qb)), 0.0);
        // Rank 0 alone prints the summary.
        let s = summary(&train_args(&data, &root.join("s.ckpt"), 1, 1, &[]));
        assert_eq!(s.lines().count(), 1, "{s}");
    }

    #[test]
    fn two_ranks_of_two_shards_match_four_shards_up_to_the_sum_order() {
        let root = common::scratch("mpi", "reorder");
        let data = data_dir(&root);
        let a = root.join("np2.ckpt");
        let b = root.join("one.ckpt");
        ranks(2, &train_args(&data, &a, 2, 4, &[]));
        one(&train_args(&data, &b, 4, 4, &[]));
        let d = max_rel_diff(&tensors(&a), &tensors(&b));
        eprintln!("max relative difference, 2 ranks x 2 shards vs 4 shards: {d:.3e}");
        assert!(d <= REORDER_BOUND, "{d:e} > {REORDER_BOUND:e}");
    }

    #[test]
    fn a_checkpoint_resumes_under_another_rank_count() {
        let root = common::scratch("mpi", "resume");
        let data = data_dir(&root);
        let whole = root.join("whole.ckpt");
        one(&train_args(&data, &whole, 2, 2, &[]));
        // Two ranks stop mid-epoch, one process finishes (taking 2 shards from the file).
        let a = root.join("a.ckpt");
        ranks(2, &train_args(&data, &a, 1, 2, &["--max-steps", "3"]));
        let mut resumed = train_args(&data, &a, 2, 2, &["--resume"]);
        let at = resumed.iter().position(|s| s == "--shards").unwrap();
        resumed.drain(at..at + 2);
        let err = one(&resumed);
        assert!(!err.contains("warning"), "{err}");
        assert_eq!(max_rel_diff(&tensors(&a), &tensors(&whole)), 0.0);
        // One process stops, two ranks finish (one shard each from the recorded two).
        let b = root.join("b.ckpt");
        one(&train_args(&data, &b, 2, 2, &["--max-steps", "7"]));
        let mut resumed = train_args(&data, &b, 1, 2, &["--resume"]);
        let at = resumed.iter().position(|s| s == "--shards").unwrap();
        resumed.drain(at..at + 2);
        let err = ranks(2, &resumed);
        assert!(
            err.contains("(step 7, 1 shards on each of 2 ranks)"),
            "{err}"
        );
        assert_eq!(max_rel_diff(&tensors(&b), &tensors(&whole)), 0.0);
    }

    #[test]
    fn an_error_on_one_rank_ends_the_job_naming_the_rank() {
        let root = common::scratch("mpi", "error");
        let data = data_dir(&root);
        // Rank 0 alone writes the metrics log, so rank 0 alone fails, while rank 1 waits in the
        // first step's exchange.
        let out = root.join("missing").join("m.ckpt");
        let o = mpirun()
            .args(["-np", "2", env!("CARGO_BIN_EXE_intq")])
            .args(train_args(&data, &out, 1, 1, &[]))
            .output()
            .expect("run mpirun");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(
            err.contains("error: rank 0 of 2: i/o: ") && err.contains("m.ckpt.metrics.jsonl"),
            "{err}"
        );
    }

    /// Pids of the processes that are rank `rank` of an `intq` run writing `out`.
    fn rank_pids(rank: usize, out: &Path) -> Vec<u32> {
        let want_env = format!("OMPI_COMM_WORLD_RANK={rank}");
        let want_arg = out.to_str().unwrap();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let read = |f: &str| std::fs::read(e.path().join(f)).unwrap_or_default();
            let cmd = read("cmdline");
            let env = read("environ");
            let has = |buf: &[u8], s: &str| buf.split(|&b| b == 0).any(|p| p == s.as_bytes());
            if has(&env, &want_env) && has(&cmd, want_arg) && has(&cmd, "train") {
                pids.push(pid);
            }
        }
        pids
    }

    #[test]
    fn a_killed_rank_ends_the_job_naming_it_and_the_checkpoint_loads() {
        let root = common::scratch("mpi", "kill");
        let data = data_dir(&root);
        let out = root.join("k.ckpt");
        let args = train_args(&data, &out, 1, 200, &["--ckpt-every", "1"]);
        let mut child = mpirun()
            .args(["-np", "2", env!("CARGO_BIN_EXE_intq")])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mpirun");
        let t0 = Instant::now();
        while !out.exists() {
            assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
            std::thread::sleep(Duration::from_millis(50));
        }
        let pids = rank_pids(1, &out);
        assert_eq!(pids.len(), 1, "rank 1's process: {pids:?}");
        let killed = Command::new("kill")
            .args(["-KILL", &pids[0].to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let t1 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t1.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the job went on for a minute after rank 1 died");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        use std::io::Read as _;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{err}");
        assert!(err.contains("rank 1"), "the error names no rank:\n{err}");
        let l = intq_train::checkpoint::load(
            &out,
            intq_train::layers::LayerOpts::default(),
            &intq_train::train_device(),
        )
        .unwrap_or_else(|e| panic!("{} does not load after the kill: {e}", out.display()));
        assert!(l.meta.step >= 1);
    }
}
