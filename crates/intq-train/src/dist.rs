//! Data parallelism across processes: N ranks started by a launcher (`mpirun -np N intq train
//! ...`) each run their part of every global batch and exchange gradients and recorded state
//! updates once per step, so that N ranks with S shards each train what one process with N·S
//! shards ([`crate::shard`]) trains, up to the order of the gradient sum's float additions.
//!
//! # What crosses per step
//!
//! Every rank draws the same epoch order and cuts the global batch into the N·S pieces of
//! [`crate::shard::pieces`]; rank r runs pieces `r·S .. (r+1)·S`. Then:
//!
//! - **gradients:** each rank forms `sum_k (n_k / B) g_k` over its own pieces (the weights of the
//!   whole batch) and one all-reduce sums these over the ranks, packed into one f32 buffer in
//!   module order with a presence flag per tensor (a tensor no piece gave a gradient stays
//!   without one, as in [`crate::shard::combine_grads`]);
//! - **per piece, in piece order:** its loss, its correct count and its recorded state updates
//!   (observer batch min/max, BN batch mean, biased variance and count) are gathered to every
//!   rank, which then merges them exactly as one process merges its shards: the loss and the
//!   state updates come out bit for bit the same as with `--shards N·S` in one process.
//!
//! Only the gradient sum's order can differ (`(a + b) + (c + d)` instead of
//! `((a + b) + c) + d`); with two ranks of one shard each it is a single commutative addition,
//! so `mpirun -np 2 ... --shards 1` equals `--shards 2` bit for bit. Since every rank applies
//! the same sums, the replicas stay identical; [`check_same`] compares a fingerprint of the
//! network and momentum over all ranks at the start and before every checkpoint, so a transport
//! that handed ranks different sums would stop the run instead of silently drifting.
//!
//! Everything crosses as host `f32`/`f64` buffers taken from and given back to burn tensors,
//! so nothing here depends on the backend the network runs on.
//!
//! # Transports
//!
//! [`Collective`] is what the trainer needs; [`Single`] is one process, and the cargo feature
//! `mpi` adds [`Mpi`] over an MPI library (Open MPI, MPICH). [`from_launcher`] picks one from
//! the environment a launcher sets, and refuses to run as one of several ranks when the
//! binary has no MPI support, rather than train N independent copies into one checkpoint.

use std::hash::Hasher;
use std::ops::Range;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::fake_quant::host_vec;
use crate::sgd::Velocity;
use crate::shard::{bn_update, merge_moments, StateUpdate};
use crate::TrainError;

/// The collective operations data-parallel training uses. Every rank must call the same
/// operations in the same order with buffers of the same layout.
pub trait Collective {
    /// This process's rank in `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum over the ranks, in place; every rank gets the same result.
    fn sum_f32(&self, buf: &mut [f32]) -> Result<(), TrainError>;
    /// Every rank's `local` concatenated in rank order; rank r sends `counts[r]` values.
    fn gather_f64(&self, local: &[f64], counts: &[usize]) -> Result<Vec<f64>, TrainError>;
    /// The smallest and largest of the ranks' `v`.
    fn min_max_u64(&self, v: u64) -> Result<(u64, u64), TrainError>;
    /// Ends every rank of the job with exit status `code` (after this rank's error is printed).
    fn abort(&self, code: i32) -> !;
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _buf: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
    fn gather_f64(&self, local: &[f64], _counts: &[usize]) -> Result<Vec<f64>, TrainError> {
        Ok(local.to_vec())
    }
    fn min_max_u64(&self, v: u64) -> Result<(u64, u64), TrainError> {
        Ok((v, v))
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Environment variables through which launchers announce the number of ranks: Open MPI's
/// `mpirun`, and the PMI of MPICH's Hydra, Intel MPI and Slurm.
pub const LAUNCHER_SIZE_VARS: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// The number of ranks a launcher started this process as one of, with the variable that says
/// so; `None` when no launcher started it.
pub fn launcher_size() -> Option<(&'static str, usize)> {
    launcher_size_in(|var| std::env::var(var).ok())
}

/// [`launcher_size`] in the environment `get` reads: the first of [`LAUNCHER_SIZE_VARS`] set
/// to a number.
fn launcher_size_in(get: impl Fn(&str) -> Option<String>) -> Option<(&'static str, usize)> {
    LAUNCHER_SIZE_VARS.iter().find_map(|&var| {
        let v = get(var)?;
        Some((var, v.trim().parse().ok()?))
    })
}

/// The collective for this process: MPI when a launcher started it (and the `mpi` feature is
/// built in), else [`Single`]. Without the feature, being one of several ranks is an error.
pub fn from_launcher() -> Result<Box<dyn Collective>, TrainError> {
    match launcher_size() {
        None => Ok(Box::new(Single)),
        #[cfg(feature = "mpi")]
        Some(_) => Ok(Box::new(Mpi::init()?)),
        #[cfg(not(feature = "mpi"))]
        Some((var, n)) if n > 1 => Err(TrainError::Config(format!(
            "started as one of {n} MPI ranks ({var}={n}), but this intq was built without MPI \
             support: every rank would train the whole run alone into the same checkpoint. \
             Build it with `cargo build --release -p intq-cli --features mpi` (needs an MPI \
             library such as Open MPI), or run it without mpirun"
        ))),
        #[cfg(not(feature = "mpi"))]
        Some(_) => Ok(Box::new(Single)),
    }
}

/// MPI's `MPI_COMM_WORLD`, initialized for calls from the main thread only (the shards'
/// threads never communicate).
#[cfg(feature = "mpi")]
pub struct Mpi {
    world: mpi::topology::SimpleCommunicator,
    // Finalizes MPI when dropped, so it goes after the communicator.
    _universe: mpi::environment::Universe,
}

#[cfg(feature = "mpi")]
impl Mpi {
    /// Initializes MPI (once per process).
    pub fn init() -> Result<Self, TrainError> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| TrainError::Config("MPI was already initialized".into()))?;
        Ok(Mpi {
            world: universe.world(),
            _universe: universe,
        })
    }
}

#[cfg(feature = "mpi")]
impl Collective for Mpi {
    fn rank(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.size() as usize
    }
    fn sum_f32(&self, buf: &mut [f32]) -> Result<(), TrainError> {
        use mpi::collective::SystemOperation;
        use mpi::traits::CommunicatorCollectives;
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn gather_f64(&self, local: &[f64], counts: &[usize]) -> Result<Vec<f64>, TrainError> {
        use mpi::datatype::PartitionMut;
        use mpi::traits::CommunicatorCollectives;
        let to_count = |n: usize| {
            i32::try_from(n).map_err(|_| {
                TrainError::Config(format!("{n} values are too many for one MPI call"))
            })
        };
        let counts = counts
            .iter()
            .map(|&c| to_count(c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut displs = Vec::with_capacity(counts.len());
        let mut total = 0usize;
        for &c in &counts {
            displs.push(to_count(total)?);
            total += c as usize;
        }
        let mut all = vec![0f64; total];
        let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
        self.world.all_gather_varcount_into(local, &mut part);
        Ok(all)
    }
    fn min_max_u64(&self, v: u64) -> Result<(u64, u64), TrainError> {
        use mpi::collective::SystemOperation;
        use mpi::traits::CommunicatorCollectives;
        let (mut lo, mut hi) = (0u64, 0u64);
        self.world
            .all_reduce_into(&v, &mut lo, SystemOperation::min());
        self.world
            .all_reduce_into(&v, &mut hi, SystemOperation::max());
        Ok((lo, hi))
    }
    fn abort(&self, code: i32) -> ! {
        use mpi::traits::Communicator;
        self.world.abort(code)
    }
}

/// The pieces rank `rank` of `size` runs when a batch is cut into `total` pieces,
/// `shards_per_rank` each (the last ranks get fewer, or none, when the batch is short).
pub fn rank_pieces(total: usize, shards_per_rank: usize, rank: usize) -> Range<usize> {
    (rank * shards_per_rank).min(total)..((rank + 1) * shards_per_rank).min(total)
}

/// What one of this rank's pieces produced.
pub struct LocalPiece {
    pub loss: f64,
    pub correct: usize,
    pub grads: Option<GradientsParams>,
    pub updates: Vec<StateUpdate>,
}

/// A step's results after the exchange, the same on every rank.
pub struct Exchanged {
    /// Mean loss over the global batch, formed as one process forms it.
    pub loss: f64,
    /// Correct top-1 predictions over the global batch.
    pub correct: usize,
    /// Gradient of the global mean loss (empty when the loss is not finite).
    pub grads: GradientsParams,
    /// The merged state updates, applied by [`Pending::apply`] once the loss is known to be
    /// finite.
    pub pending: Pending,
}

/// Every piece's state records, in piece order, with the layers they belong to.
pub struct Pending {
    template: Vec<StateUpdate>,
    records: Vec<Vec<f64>>,
}

/// Values one piece's records of `template`'s updates take: 2 per observer, `1 + 2 C` per BN
/// layer of C channels.
fn records_len(template: &[StateUpdate]) -> usize {
    template
        .iter()
        .map(|u| match u {
            StateUpdate::Observer { .. } => 2,
            StateUpdate::BatchNorm(b) => 1 + 2 * b.mean.dims()[0],
        })
        .sum()
}

fn mismatch(what: &str) -> TrainError {
    TrainError::Config(format!(
        "data-parallel pieces recorded different state updates ({what}); the network's forward \
         must not depend on the batch size"
    ))
}

/// Appends `updates` as plain numbers in `template`'s layout.
fn encode(
    updates: &[StateUpdate],
    template: &[StateUpdate],
    out: &mut Vec<f64>,
) -> Result<(), TrainError> {
    if updates.len() != template.len() {
        return Err(mismatch("counts"));
    }
    for (u, t) in updates.iter().zip(template) {
        match (u, t) {
            (StateUpdate::Observer { min, max, .. }, StateUpdate::Observer { .. }) => {
                out.extend([*min as f64, *max as f64]);
            }
            (StateUpdate::BatchNorm(b), StateUpdate::BatchNorm(tb)) => {
                let mean = host_vec(b.mean.clone());
                let var = host_vec(b.var.clone());
                let c = tb.mean.dims()[0];
                if mean.len() != c || var.len() != c {
                    return Err(mismatch("channel counts"));
                }
                out.push(b.count as f64);
                out.extend(mean.iter().map(|&v| v as f64));
                out.extend(var.iter().map(|&v| v as f64));
            }
            _ => return Err(mismatch("update kind")),
        }
    }
    Ok(())
}

impl Pending {
    /// Applies the records as [`crate::shard::apply_updates`] applies shards' logs: one piece's
    /// as recorded, several merged in piece order (observers: min of minima and max of maxima;
    /// BN: the full-batch moments).
    pub fn apply(self) -> Result<(), TrainError> {
        let one = self.records.len() == 1;
        let mut off = 0;
        for t in &self.template {
            match t {
                StateUpdate::Observer { obs, .. } => {
                    let at = |r: &Vec<f64>| (r[off] as f32, r[off + 1] as f32);
                    if one {
                        let (lo, hi) = at(&self.records[0]);
                        obs.observe(lo, hi);
                    } else {
                        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
                        for r in &self.records {
                            let (min, max) = at(r);
                            lo = lo.min(min);
                            hi = hi.max(max);
                        }
                        obs.observe(lo, hi);
                    }
                    off += 2;
                }
                StateUpdate::BatchNorm(b) => {
                    let c = b.mean.dims()[0];
                    let part = |r: &Vec<f64>| {
                        let f = |s: &[f64]| s.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                        let base = off + 1;
                        (
                            f(&r[base..base + c]),
                            f(&r[base + c..base + 2 * c]),
                            r[off] as usize,
                        )
                    };
                    let (mean, var) = if one {
                        let (m, v, _) = part(&self.records[0]);
                        (m, v)
                    } else {
                        merge_moments(&self.records.iter().map(part).collect::<Vec<_>>())
                    };
                    let device = b.mean.device();
                    let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [c]), &device);
                    bn_update(&b.running_mean, &b.running_var, b.momentum, t(mean), t(var));
                    off += 1 + 2 * c;
                }
            }
        }
        Ok(())
    }
}

/// Exchanges one step's results between the ranks. `local` are this rank's pieces, which are
/// `mine` of the batch's pieces; `weights[k]` is piece k's share of the global batch;
/// `template` is any piece's state updates (the layers' order and shapes, the same on every
/// rank: a rank without a piece in a short batch still runs a forward for it).
pub fn exchange<M: Module>(
    module: &M,
    comm: &dyn Collective,
    local: Vec<LocalPiece>,
    template: Vec<StateUpdate>,
    weights: &[f64],
    shards_per_rank: usize,
) -> Result<Exchanged, TrainError> {
    let total = weights.len();
    let mine = rank_pieces(total, shards_per_rank, comm.rank());
    if local.len() != mine.len() {
        return Err(TrainError::Config(format!(
            "rank {} ran {} pieces, expected {}",
            comm.rank(),
            local.len(),
            mine.len()
        )));
    }
    // Loss, correct count and records of each piece.
    let rec = 2 + records_len(&template);
    let mut send = Vec::with_capacity(rec * local.len());
    for p in &local {
        send.extend([p.loss, p.correct as f64]);
        encode(&p.updates, &template, &mut send)?;
    }
    let counts: Vec<usize> = (0..comm.size())
        .map(|r| rec * rank_pieces(total, shards_per_rank, r).len())
        .collect();
    let all = comm.gather_f64(&send, &counts)?;
    if all.len() != rec * total {
        return Err(TrainError::Config(format!(
            "gathered {} values for {total} pieces of {rec}",
            all.len()
        )));
    }
    let pieces: Vec<&[f64]> = all.chunks_exact(rec).collect();
    let loss = if total == 1 {
        pieces[0][0]
    } else {
        pieces.iter().zip(weights).map(|(p, w)| p[0] * w).sum()
    };
    let correct = pieces.iter().map(|p| p[1] as usize).sum();
    let records = pieces.iter().map(|p| p[2..].to_vec()).collect();
    // A non-finite loss is the same on every rank, so all of them skip the sum and stop.
    let grads = if loss.is_finite() {
        let mut g = Vec::with_capacity(local.len());
        for p in local {
            g.push(p.grads.ok_or_else(|| {
                TrainError::NonFinite("a piece with a finite loss has no gradients".into())
            })?);
        }
        all_reduce_grads(module, comm, g, &weights[mine])?
    } else {
        GradientsParams::new()
    };
    Ok(Exchanged {
        loss,
        correct,
        grads,
        pending: Pending { template, records },
    })
}

/// Values the gradient all-reduce of `module` carries per step: a presence flag and the
/// elements of every tensor that takes a gradient (4 bytes each).
pub fn grad_values<M: Module>(module: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            if t.is_require_grad() {
                self.0 += 1 + t.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    module.visit(&mut c);
    c.0
}

/// Values the piece records of one step carry (8 bytes each): `2 + records` per piece.
pub fn record_values(template: &[StateUpdate], pieces: usize) -> usize {
    pieces * (2 + records_len(template))
}

/// `sum_k w_k g_k` over this rank's pieces (formed as [`crate::shard::combine_grads`] forms
/// it, but weighted also for a single piece), summed over the ranks.
fn all_reduce_grads<M: Module>(
    module: &M,
    comm: &dyn Collective,
    mut grads: Vec<GradientsParams>,
    weights: &[f64],
) -> Result<GradientsParams, TrainError> {
    struct Pack<'a> {
        grads: &'a mut [GradientsParams],
        weights: &'a [f64],
        flags: Vec<f32>,
        data: Vec<f32>,
    }
    impl ModuleVisitor for Pack<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            if !t.is_require_grad() {
                return;
            }
            let mut acc: Option<Tensor<D>> = None;
            for (g, &w) in self.grads.iter_mut().zip(self.weights) {
                if let Some(t) = g.remove::<D>(param.id) {
                    let t = t.mul_scalar(w);
                    acc = Some(match acc {
                        None => t,
                        Some(a) => a + t,
                    });
                }
            }
            self.flags.push(if acc.is_some() { 1.0 } else { 0.0 });
            match acc {
                Some(a) => self.data.extend(host_vec(a)),
                None => self
                    .data
                    .extend(std::iter::repeat_n(0.0, t.shape().num_elements())),
            }
        }
    }
    struct Unpack<'a> {
        buf: &'a [f32],
        flags: usize,
        tensor: usize,
        off: usize,
        out: GradientsParams,
    }
    impl ModuleVisitor for Unpack<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            if !t.is_require_grad() {
                return;
            }
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let present = self.buf[self.tensor] > 0.0;
            self.tensor += 1;
            let start = self.flags + self.off;
            self.off += n;
            if present {
                let device: Device = t.inner().device();
                let v = self.buf[start..start + n].to_vec();
                self.out.register(
                    param.id,
                    Tensor::<D>::from_data(TensorData::new(v, dims), &device),
                );
            }
        }
    }
    let mut pack = Pack {
        grads: &mut grads,
        weights,
        flags: Vec::new(),
        data: Vec::new(),
    };
    module.visit(&mut pack);
    let flags = pack.flags.len();
    let mut buf = pack.flags;
    buf.append(&mut pack.data);
    comm.sum_f32(&mut buf)?;
    let mut unpack = Unpack {
        buf: &buf,
        flags,
        tensor: 0,
        off: 0,
        out: GradientsParams::new(),
    };
    module.visit(&mut unpack);
    Ok(unpack.out)
}

/// A hash of every tensor of `module` (parameters and running states, in module order) and of
/// each parameter's momentum buffer.
pub fn fingerprint<M: Module>(module: &M, vel: &Velocity) -> u64 {
    struct Hash<'a> {
        h: std::collections::hash_map::DefaultHasher,
        vel: &'a Velocity,
    }
    impl ModuleVisitor for Hash<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            for d in t.dims() {
                self.h.write_usize(d);
            }
            for v in host_vec(t) {
                self.h.write_u32(v.to_bits());
            }
            match self.vel.by_id.get(&param.id) {
                Some(v) => {
                    self.h.write_u8(1);
                    for x in host_vec(v.clone()) {
                        self.h.write_u32(x.to_bits());
                    }
                }
                None => self.h.write_u8(0),
            }
        }
    }
    let mut h = Hash {
        h: Default::default(),
        vel,
    };
    module.visit(&mut h);
    h.h.finish()
}

/// Checks that every rank holds the same network and momentum (`when`: where in the run).
pub fn check_same<M: Module>(
    comm: &dyn Collective,
    module: &M,
    vel: &Velocity,
    when: &str,
) -> Result<(), TrainError> {
    if comm.size() == 1 {
        return Ok(());
    }
    let (lo, hi) = comm.min_max_u64(fingerprint(module, vel))?;
    if lo != hi {
        return Err(TrainError::Config(format!(
            "the {} ranks hold different networks {when}; every rank must start from the same \
             checkpoint (or seed) and data",
            comm.size()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_pieces_cover_the_batch_once() {
        for total in 0..9 {
            for s in 1..4 {
                for size in 1..4 {
                    let mut next = 0;
                    for r in 0..size {
                        let p = rank_pieces(total, s, r);
                        assert_eq!(p.start, next.min(total));
                        assert!(p.len() <= s);
                        next = p.end;
                    }
                    if total <= s * size {
                        assert_eq!(next, total, "total {total} s {s} size {size}");
                    }
                }
            }
        }
    }

    #[test]
    fn launcher_size_reads_the_first_variable_set_to_a_number() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(launcher_size_in(env(&[])), None);
        assert_eq!(
            launcher_size_in(env(&[("PMI_SIZE", "4")])),
            Some(("PMI_SIZE", 4))
        );
        assert_eq!(
            launcher_size_in(env(&[("PMI_SIZE", "4"), ("OMPI_COMM_WORLD_SIZE", " 2\n")])),
            Some(("OMPI_COMM_WORLD_SIZE", 2))
        );
        assert_eq!(
            launcher_size_in(env(&[("OMPI_COMM_WORLD_SIZE", "two"), ("PMI_SIZE", "3")])),
            Some(("PMI_SIZE", 3))
        );
    }
}
