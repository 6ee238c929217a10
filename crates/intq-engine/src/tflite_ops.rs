//! Load-time parameters of the ops added after the paper's set for today's edge models (MUL,
//! SUB, the standalone ReLUs, LEAKY_RELU, PRELU, HARD_SWISH, TANH, the two resizes): each derived
//! from the tensors' `(S, Z)` as TFLite's Prepare derives it (docs/spec.md §11), so imported
//! models give TFLite's bytes.

use crate::plan::{activation_clamp, codes_of, op_err, params_of, Prepared, Table};
use crate::{DType, Graph, GraphError, Op};
use intq_kernels::reference::{
    tflite_tanh_table, BilinearArithmetic, HardSwishParams, LeakyReluParams, MulParams,
    PreluParams, ReluParams, ResizeMode, SubParams,
};

/// The prepared form of one of this module's ops.
pub(crate) fn prepare(graph: &Graph, index: usize, op: &Op) -> Result<Prepared, GraphError> {
    let kind = op.kind();
    let fail = |what: &str, e: intq_quant::QuantError| {
        op_err(index, kind, format!("its {what} cannot be formed: {e}"))
    };
    let pin = params_of(graph, op.inputs()[0]);
    let out = op.output();
    let pout = params_of(graph, out);
    Ok(match op {
        Op::Mul {
            lhs,
            rhs,
            activation,
            ..
        } => {
            let (lo, hi) = activation_clamp(*activation, pout, codes_of(graph, out));
            Prepared::Mul(
                MulParams::new(params_of(graph, *lhs), params_of(graph, *rhs), pout, lo, hi)
                    .map_err(|e| fail("multiplier S1 * S2 / S_out", e))?,
            )
        }
        Op::Sub {
            lhs,
            rhs,
            activation,
            ..
        } => {
            let (lo, hi) = activation_clamp(*activation, pout, codes_of(graph, out));
            Prepared::Sub(
                SubParams::new(params_of(graph, *lhs), params_of(graph, *rhs), pout, lo, hi)
                    .map_err(|e| {
                        fail(
                            "rescaling multipliers (each must be below 1, as for Add)",
                            e,
                        )
                    })?,
            )
        }
        Op::Relu { activation, .. } => {
            let clamp = activation_clamp(*activation, pout, codes_of(graph, out));
            Prepared::Relu(
                ReluParams::new(pin, pout, clamp)
                    .map_err(|e| fail("multiplier S_in / S_out", e))?,
            )
        }
        Op::LeakyRelu { alpha, .. } => Prepared::LeakyRelu(
            LeakyReluParams::new(pin, pout, *alpha)
                .map_err(|e| fail("multipliers S_in / S_out and S_in * alpha / S_out", e))?,
        ),
        Op::HardSwish { .. } => {
            Prepared::HardSwish(HardSwishParams::new(pin, pout).map_err(|e| {
                fail(
                    "output multiplier S_in / 128 / S_out (TFLite needs it at most 1)",
                    e,
                )
            })?)
        }
        Op::Tanh { .. } => Prepared::Logistic(match graph.tensor(out).dtype {
            DType::U8 => Table::U8(tflite_tanh_table::<u8>(pin, pout)),
            _ => Table::I8(tflite_tanh_table::<i8>(pin, pout)),
        }),
        Op::ResizeNearest {
            align_corners,
            half_pixel_centers,
            ..
        } => Prepared::Resize(
            ResizeMode {
                align_corners: *align_corners,
                half_pixel_centers: *half_pixel_centers,
            },
            None,
        ),
        Op::ResizeBilinear {
            align_corners,
            half_pixel_centers,
            ..
        } => Prepared::Resize(
            ResizeMode {
                align_corners: *align_corners,
                half_pixel_centers: *half_pixel_centers,
            },
            // TFLite's reference kernel interpolates uint8 in f32 and int8 in fixed point.
            Some(match graph.tensor(out).dtype {
                DType::U8 => BilinearArithmetic::Float,
                _ => BilinearArithmetic::Integer,
            }),
        ),
        Op::Prelu { alpha, .. } => Prepared::Prelu(
            PreluParams::new(pin, params_of(graph, *alpha), pout)
                .map_err(|e| fail("multipliers S_in / S_out and S_in * S_alpha / S_out", e))?,
        ),
        other => unreachable!("{} is not an elementwise op of this module", other.kind()),
    })
}
