//! gemmlowp fixed-point arithmetic (placeholder until the Logistic/Softmax kernels land).
