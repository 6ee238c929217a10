//! Import of float ONNX models into a graph intq can fine-tune with QAT and convert.
