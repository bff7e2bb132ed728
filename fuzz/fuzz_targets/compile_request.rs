//! A protobuf `CompileRequest` from the network, as a worker and the
//! coordinator decode and check it: no input may panic, whatever is
//! accepted is within the limits, survives a round trip unchanged, and the
//! file names a worker derives from it (also the files of a compile from
//! source) stay inside the task directory.
#![no_main]

use std::path::{Component, Path};

use hybridgrid_core::task::{ContextFile, SourceMode};
use hybridgrid_exec::native::input_file_name;
use hybridgrid_net::convert::{RequestLimits, task_from_proto, task_to_proto};
use hybridgrid_net::proto::CompileRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CompileRequest::decode(data) else {
        return;
    };
    // Small limits so that the size checks are reached.
    let limits = RequestLimits {
        max_args: 64,
        max_arg_len: 1024,
        max_context_files: 16,
        max_request_bytes: 1 << 20,
    };
    let Ok(task) = task_from_proto(req, &limits) else {
        return;
    };
    assert!(task.args.len() <= limits.max_args);
    assert!(task.context_files.len() <= limits.max_context_files);
    // The worker's checks, in its order: the allow list, then the input.
    let _ = hybridgrid_exec::args::validate_task_args(&task);
    let _ = task.input.decode_limited(1 << 20);
    let name = input_file_name(&task.source_name, task.language.extension());
    assert!(
        !name.is_empty()
            && Path::new(&name)
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
        "input name {name:?} from {:?} leaves the task directory",
        task.source_name
    );
    assert!(
        name != "output.o" && name != "output.dwo",
        "input name {name:?} from {:?} is an output's name",
        task.source_name
    );
    for f in &task.context_files {
        let depth = ContextFile::parent_depth(&f.path);
        assert!(
            depth.is_some_and(|d| d <= 16),
            "accepted context file {:?}",
            f.path
        );
        let _ = f.data.decode_limited(1 << 20);
    }
    if let Some(m) = &task.source_mode {
        // A compile from source: every file lands below the task root.
        assert!(m.files.len() <= limits.max_context_files);
        assert_eq!(m.output_paths.len(), 1 + task.extra_outputs.len());
        for f in &m.files {
            let rel = SourceMode::relative_path(&f.path);
            assert!(
                rel.as_deref().is_some_and(|r| Path::new(r)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))),
                "accepted source file {:?}",
                f.path
            );
        }
    }
    let again =
        task_from_proto(task_to_proto(&task), &limits).expect("an accepted task re-encodes");
    assert_eq!(again, task);
});
