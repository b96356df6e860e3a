//! `danmu-load floor` measures what it says: every write it counts reached the reader (the run
//! fails otherwise), both ways of writing, on real loopback sockets and a real reader process.
//! Counts only; the CPU figures are never asserted beyond being measured.

use danmu_loadtest::floor::{self, FloorPlan, WriteMode};

fn small(mode: WriteMode) -> FloorPlan {
    FloorPlan {
        connections: 50,
        frame_bytes: 119,
        writes_per_tick: 30,
        tick_ms: 10,
        seconds: 0.5,
        mode,
        batch: 8,
        bulk_interval_ms: 5,
        // Test machines may have one core; the figures are not the point here.
        pin: false,
        exe: env!("CARGO_BIN_EXE_danmu-load").into(),
    }
}

#[test]
fn every_write_reaches_the_reader_with_write_and_with_io_uring() {
    for mode in [WriteMode::Write, WriteMode::Uring] {
        let report = floor::run(&small(mode)).unwrap_or_else(|e| panic!("{mode:?}: {e:#}"));
        // 50 ticks of 30 writes; `run` itself failed if the reader got fewer bytes.
        assert_eq!(
            report.writes + report.refused,
            50 * 30,
            "{mode:?}: {report:#?}"
        );
        assert_eq!(
            report.refused, 0,
            "{mode:?}: a paced 119-B write never fills a socket"
        );
        assert!(report.window_secs >= 0.45, "{mode:?}: {report:#?}");
    }
}

#[test]
fn a_plan_that_cannot_run_is_refused_with_a_reason() {
    let mut plan = small(WriteMode::Uring);
    plan.batch = 0;
    let error = floor::run(&plan).expect_err("batch 0");
    assert!(format!("{error:#}").contains("--batch"), "{error:#}");
}
