//! SGD with momentum and weight decay (PyTorch's formulation: `v = mu v + g + wd p`,
//! `p -= lr v`; learned activation ranges get no decay), written as a module mapper so that the velocity is keyed by parameter path and
//! can be saved in, and restored from, a checkpoint (burn's optimizer keys its state by
//! `ParamId`, which safetensors does not carry, so a resumed run would lose its momentum).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Momentum buffers by parameter id (flattened).
#[derive(Debug, Clone, Default)]
pub struct Velocity {
    pub by_id: HashMap<ParamId, Tensor<1>>,
}

/// Hyper-parameters of one step.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// burn's container name of [`crate::observer::LearnedRange`], whose parameters get no weight
/// decay: decay would pull a learned range towards `[0, 0]` (or the step towards 0), i.e. shrink
/// it and clip the activations by a force unrelated to the loss; TensorFlow's and LSQ's ranges
/// are trained without it.
const NO_DECAY_CONTAINER: &str = "Struct:LearnedRange";

struct Mapper<'a> {
    grads: &'a mut GradientsParams,
    vel: &'a mut Velocity,
    step: SgdStep,
    /// Container type of each module entered (burn passes the parent's type with a field).
    containers: Vec<String>,
}

impl ModuleMapper for Mapper<'_> {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.containers.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let dims = tensor.dims();
        let p = tensor.inner();
        let mut g = grad;
        let decays = self.containers.last().map(String::as_str) != Some(NO_DECAY_CONTAINER);
        if self.step.weight_decay != 0.0 && decays {
            g = g + p.clone().mul_scalar(self.step.weight_decay);
        }
        let v = match self.vel.by_id.remove(&id) {
            Some(v) if self.step.momentum != 0.0 => {
                v.reshape(dims).mul_scalar(self.step.momentum) + g
            }
            _ => g,
        };
        let p = p - v.clone().mul_scalar(self.step.lr);
        if self.step.momentum != 0.0 {
            self.vel.by_id.insert(id, v.flatten(0, D - 1));
        }
        let p = Tensor::from_inner(p).require_grad();
        Param::from_mapped_value(id, p, mapper)
    }
}

/// One SGD step over every parameter that has a gradient.
pub fn step<M: Module>(module: M, mut grads: GradientsParams, vel: &mut Velocity, s: SgdStep) -> M {
    module.map(&mut Mapper {
        grads: &mut grads,
        vel,
        step: s,
        containers: Vec::new(),
    })
}

/// Visits every float tensor (parameters and running state) with its dotted path.
pub struct PathVisitor<F: FnMut(&str, ParamId, Vec<usize>, Vec<f32>)> {
    path: Vec<String>,
    f: F,
}

impl<F: FnMut(&str, ParamId, Vec<usize>, Vec<f32>)> PathVisitor<F> {
    pub fn new(f: F) -> Self {
        PathVisitor {
            path: Vec::new(),
            f,
        }
    }
}

impl<F: FnMut(&str, ParamId, Vec<usize>, Vec<f32>)> ModuleVisitor for PathVisitor<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let data = crate::fake_quant::host_vec(t);
        (self.f)(&self.path.join("."), param.id, dims, data);
    }
}

/// Replaces every float tensor by the one `f` returns for its path (or keeps it on `None`).
pub struct PathMapper<F: FnMut(&str, &[usize]) -> Option<Vec<f32>>> {
    path: Vec<String>,
    f: F,
}

impl<F: FnMut(&str, &[usize]) -> Option<Vec<f32>>> PathMapper<F> {
    pub fn new(f: F) -> Self {
        PathMapper {
            path: Vec::new(),
            f,
        }
    }
}

impl<F: FnMut(&str, &[usize]) -> Option<Vec<f32>>> ModuleMapper for PathMapper<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let Some(values) = (self.f)(&self.path.join("."), &dims) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let grad = tensor.is_require_grad();
        let mut t: Tensor<D> = Tensor::from_data(
            burn::tensor::TensorData::new(values, dims),
            &tensor.device(),
        );
        if grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}
