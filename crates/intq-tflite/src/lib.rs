//! `.tflite` import and export (FlatBuffers) for the intq engine graph.
