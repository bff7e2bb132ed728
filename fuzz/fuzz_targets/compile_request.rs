//! A protobuf `CompileRequest` from the network, as a worker and the
//! coordinator decode and check it: no input may panic, and whatever is
//! accepted survives a round trip unchanged.
#![no_main]

use hybridgrid_net::convert::{RequestLimits, task_from_proto, task_to_proto};
use hybridgrid_net::proto::CompileRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CompileRequest::decode(data) else {
        return;
    };
    // Small limits so that the size checks are reached.
    let limits = RequestLimits::default().with_max_request_bytes(1 << 20);
    let Ok(task) = task_from_proto(req, &limits) else {
        return;
    };
    let _ = hybridgrid_exec::args::validate_remote_args(&task.args);
    let _ = task.input.decode_limited(1 << 20);
    for f in &task.context_files {
        let _ = hybridgrid_core::task::ContextFile::parent_depth(&f.path);
        let _ = f.data.decode_limited(1 << 20);
    }
    let again = task_from_proto(task_to_proto(&task), &limits).expect("an accepted task re-encodes");
    assert_eq!(again, task);
});
