//! A worker's registration (`WorkerInfo`) from the network: no input may
//! panic.
#![no_main]

use hybridgrid_net::convert::{worker_from_proto, worker_to_proto};
use hybridgrid_net::proto::WorkerInfo;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(w) = WorkerInfo::decode(data) else {
        return;
    };
    if let Ok(info) = worker_from_proto(w) {
        let _ = worker_from_proto(worker_to_proto(&info));
    }
});
