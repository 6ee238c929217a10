//! Fuzz target: `.tflite` import must refuse or import any bytes, never panic or over-allocate;
//! what imports must plan, export and import again, and run when small.
#![no_main]

use intq_engine::examples::random_input;
use intq_engine::Model;
use libfuzzer_sys::fuzz_target;

const MAX_RUN_BYTES: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(graph) = intq_tflite::import(data) else {
        return;
    };
    if let Ok(bytes) = intq_tflite::export(&graph) {
        let again = intq_tflite::import(&bytes).expect("an exported model imports");
        assert_eq!(again, graph);
    }
    let Ok(model) = Model::new(graph) else {
        return;
    };
    if model.memory_stats().bytes_without_reuse > MAX_RUN_BYTES {
        return;
    }
    let inputs = random_input(model.graph(), 1);
    let _ = model.run(&inputs);
});
