//! Read rate of the whole-MS Stokes I read: `cargo run --release -p ms_io --example read_rate --
//! <ms> [repeats]`. Prints the median wall time over the repeats and the rate in rows/s and MB/s
//! (MB of DATA + FLAG + WEIGHT_SPECTRUM + UVW read).

use std::time::Instant;

use ms_io::{FieldSelector, MeasurementSet, Selection};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: read_rate <ms> [repeats] [field]");
    let repeats: usize = args.next().map_or(7, |s| s.parse().unwrap());
    let field = args.next().map(|s| FieldSelector::Id(s.parse().unwrap()));
    let m = MeasurementSet::open(&path).unwrap();
    let sel = Selection {
        field,
        ..Default::default()
    };
    let mut times = vec![];
    let mut rows = 0;
    let mut bytes = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let v = m.read(&sel).unwrap();
        times.push(t.elapsed().as_secs_f64());
        rows = v.stats.rows;
        let ncorr = m.info().polarizations[0].len();
        bytes = v.stats.samples * ncorr * (8 + 1 + 4) + rows * 24;
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{path}: {rows} rows, median {:.2} ms (min {:.2}), {:.0} rows/s, {:.0} MB/s",
        med * 1e3,
        times[0] * 1e3,
        rows as f64 / med,
        bytes as f64 / med / 1e6
    );
}
