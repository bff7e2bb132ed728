//! Which compiles the client keeps local because a compile from source on
//! a worker could not be byte-identical (moved here from hybridgrid-exec
//! with the client code).

#[test]
fn the_client_keeps_what_cannot_be_exact_local() {
    use hybridgrid_client::{ClientOptions, source_mode_refusal};
    use hybridgrid_core::task::{CompilerFamily, DriverKind};
    use hybridgrid_exec::args::{Classification, classify};
    let refusal = |args: &[&str], opts: &ClientOptions| {
        let argv: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
        match classify(CompilerFamily::Gcc, DriverKind::C, &argv) {
            Classification::Distributable(p) => source_mode_refusal(&p, opts),
            other => panic!("{args:?}: {other:?}"),
        }
    };
    let on = ClientOptions::default();
    assert_eq!(refusal(&["-g", "-Iinc", "-DX", "-c", "a.c"], &on), None);
    assert_eq!(
        refusal(&["-g", "-gsplit-dwarf", "-c", "a.c", "-o", "o/a.o"], &on),
        None
    );
    assert_eq!(
        refusal(&["-g", "-ffile-prefix-map=/b=.", "-c", "a.c"], &on),
        None
    );
    for (args, why) in [
        (&["-g", "-c", "a.S"][..], "assembler"),
        (&["-g", "--sysroot=/x", "-c", "a.c"], "preprocessor option"),
        (
            &["-g", "-gsplit-dwarf", "-c", "a.c", "-o", "/abs/a.o"],
            "absolute output",
        ),
        (&["-g3", "-gsplit-dwarf", "-c", "a.c"], "-g3"),
    ] {
        let r = refusal(args, &on).unwrap_or_else(|| panic!("{args:?} must stay local"));
        assert!(r.contains(why), "{args:?}: {r}");
    }
    let mut off = ClientOptions::default();
    off.remote_debug_info = false;
    let r = refusal(&["-g", "-c", "a.c"], &off).expect("off keeps -g local");
    assert!(r.contains("remote_debug_info"), "{r}");
}
