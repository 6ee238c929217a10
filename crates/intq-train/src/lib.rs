//! Quantization-aware training (Jacob et al. 2018 §3): fake quantization, observers, QAT layers, model zoo, trainer, export to the engine graph.
