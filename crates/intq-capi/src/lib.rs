//! The C API of intq's inference engine: load a model, describe its tensors, run it.
