use eventfold_engine::{Engine, EngineOptions};

eventfold_conformance::conformance_tests!(
    || async {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("open engine");
        (engine, dir)
    },
    limits = EngineOptions::for_tests().limits
);

/// The schema registry's cases on the engine under `eventfold_schema::Validating`, as
/// `eventfold serve --data` runs it (the engine's directory has one writer: `exclusive`).
mod schemas {
    use eventfold_engine::{Engine, EngineOptions};
    use eventfold_schema::Validating;

    eventfold_conformance::schema_conformance_tests!(
        || async {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("open engine");
            (Validating::exclusive(engine), dir)
        },
        limits = EngineOptions::for_tests().limits
    );
}

mod window {
    use eventfold_engine::{Engine, EngineOptions};

    eventfold_conformance::idempotency_window_tests!(|window| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EngineOptions {
            idempotency: window,
            ..EngineOptions::for_tests()
        };
        let engine = Engine::open(dir.path(), options).expect("open engine");
        (engine, dir)
    });
}
