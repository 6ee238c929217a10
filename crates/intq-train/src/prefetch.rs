//! Training images read on demand: a [`BatchSource`] gives the pixels of any images by index
//! (decoding pictures from disk, say), and a [`Prefetcher`] reads an epoch's batches in their
//! order on a background thread into a bounded queue, so that reading overlaps the training
//! step and at most `depth` read batches wait in memory. The trainer takes either this or an
//! [`ImageSet`] in memory ([`crate::trainer::TrainData`]); the batches, and so the run, are the
//! same bit for bit.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::trainer::ImageSet;

/// Images that can be read by index, `channels x rows x cols` bytes each (CHW), with their
/// labels at hand (labels are small; pixels need not be in memory).
pub trait BatchSource: Send + Sync {
    /// How many images there are.
    fn len(&self) -> usize;
    /// True when there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `[channels, rows, cols]` of every image.
    fn shape(&self) -> [usize; 3];
    /// The label of every image, by index.
    fn labels(&self) -> &[u8];
    /// Appends the CHW pixels of the images `idx`, one after the other, to `out`; the error
    /// names what could not be read.
    fn read(&self, idx: &[usize], out: &mut Vec<u8>) -> Result<(), String>;
}

/// Images held in memory, owned: an [`ImageSet`]'s contents as a [`BatchSource`].
#[derive(Debug, Clone)]
pub struct InMemory {
    images: Vec<u8>,
    labels: Vec<u8>,
    shape: [usize; 3],
}

impl InMemory {
    /// A copy of `set`'s images and labels.
    pub fn from_set(set: &ImageSet) -> Self {
        InMemory {
            images: set.images.to_vec(),
            labels: set.labels.to_vec(),
            shape: [set.channels, set.rows, set.cols],
        }
    }
}

impl BatchSource for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn labels(&self) -> &[u8] {
        &self.labels
    }
    fn read(&self, idx: &[usize], out: &mut Vec<u8>) -> Result<(), String> {
        let p: usize = self.shape.iter().product();
        for &i in idx {
            let px = self
                .images
                .get(i * p..(i + 1) * p)
                .ok_or_else(|| format!("image {i} of {}", self.len()))?;
            out.extend_from_slice(px);
        }
        Ok(())
    }
}

/// One read batch: its pixels, or why it could not be read.
pub type Fetched = Result<Vec<u8>, String>;

/// Reads a list of batches in order on its own thread, keeping at most `depth` read batches
/// queued. Dropping it stops the reader after the batch it is reading.
pub struct Prefetcher {
    rx: Option<Receiver<Fetched>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts reading `batches` (each a list of image indices) from `source`; `depth` is at
    /// least 1.
    pub fn start(source: Arc<dyn BatchSource>, batches: Vec<Vec<usize>>, depth: usize) -> Self {
        let (tx, rx) = sync_channel::<Fetched>(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("intq-prefetch".into())
            .spawn(move || {
                for idx in batches {
                    let mut px =
                        Vec::with_capacity(idx.len() * source.shape().iter().product::<usize>());
                    let r = source.read(&idx, &mut px).map(|_| px);
                    let failed = r.is_err();
                    // A closed queue: the trainer stopped early.
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the batch reader thread");
        Prefetcher {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// The next batch in order, waiting for it if it is not read yet; `None` after the last
    /// (or after a failed read was returned).
    pub fn next_batch(&mut self) -> Option<Fetched> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the queue first makes a blocked reader's send fail, so the join is short.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> InMemory {
        InMemory {
            images: (0..24).collect(),
            labels: vec![0, 1, 2, 3, 4, 5],
            shape: [1, 2, 2],
        }
    }

    #[test]
    fn batches_arrive_in_order_with_the_pixels_of_their_indices() {
        let src: Arc<dyn BatchSource> = Arc::new(set());
        let mut p = Prefetcher::start(src, vec![vec![5, 0], vec![2]], 1);
        assert_eq!(
            p.next_batch().unwrap().unwrap(),
            vec![20, 21, 22, 23, 0, 1, 2, 3]
        );
        assert_eq!(p.next_batch().unwrap().unwrap(), vec![8, 9, 10, 11]);
        assert!(p.next_batch().is_none());
    }

    #[test]
    fn a_failed_read_ends_the_queue_and_dropping_early_returns() {
        let src: Arc<dyn BatchSource> = Arc::new(set());
        let mut p = Prefetcher::start(src.clone(), vec![vec![1], vec![9], vec![2]], 1);
        assert!(p.next_batch().unwrap().is_ok());
        assert_eq!(p.next_batch().unwrap().unwrap_err(), "image 9 of 6");
        assert!(p.next_batch().is_none());
        // Many batches, one taken: the drop stops the reader instead of reading them all.
        let many: Vec<Vec<usize>> = (0..10_000).map(|i| vec![i % 6]).collect();
        let mut q = Prefetcher::start(src, many, 2);
        assert!(q.next_batch().unwrap().is_ok());
        drop(q);
    }
}
