//! The report as a picture: each leecher's download rate over time, and below it the
//! bytes each profile served per second, stacked, so one can see who carried the
//! download and when. Drawn with `plotters`' SVG backend alone: SVG text is laid out by
//! whatever shows the file, so no font is needed here and the picture is a string.

use plotters::prelude::*;

use super::profile::Profile;
use super::report::Report;

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {0}")]
pub struct PlotError(String);

const MIB: f64 = 1024.0 * 1024.0;

/// The shortest time axis drawn, in seconds.
const MIN_SECONDS: f64 = 0.1;

/// A curve: (seconds, MiB/s) points.
type Curve = Vec<(f64, f64)>;

/// One colour per profile, in [`Profile::ALL`] order, and the leechers' colours.
const PROFILE_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];
const LEECHER_COLOURS: [RGBColor; 4] = [
    RGBColor(0, 0, 0),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
];

/// Per-second rates from cumulative counts `(t, total)`: one point per interval, at its
/// end, in MiB/s.
fn rates(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1).max(0.0) / (w[1].0 - w[0].0) / MIB))
        .collect()
}

/// Each leecher's label, verified rate and received rate.
type LeecherCurves = Vec<(String, Curve, Curve)>;

/// Each present profile's colour slot, the profile, and its stacked curve.
type StackedCurves = Vec<(usize, Profile, Curve)>;

/// A drawing failure, as the plot's error.
fn drawing<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError(e.to_string())
}

/// Each leecher's verified rate and, dashed, the rate at which bytes came in (wasted
/// ones included): before its first piece passes a leecher already receives.
fn leecher_curves(report: &Report) -> LeecherCurves {
    let curve = |l: &super::report::LeecherReport, received: bool| {
        let mut cumulative = vec![(0.0, 0.0)];
        cumulative.extend(l.throughput.iter().map(|s| {
            let bytes = if received {
                s.received
            } else {
                s.verified_bytes
            };
            (s.t, bytes as f64)
        }));
        rates(&cumulative)
    };
    report
        .leechers
        .iter()
        .map(|l| {
            (
                format!("leecher {}", l.index),
                curve(l, false),
                curve(l, true),
            )
        })
        .collect()
}

/// Stacked: each profile's curve is the sum of its rate and the rates of the profiles
/// before it, drawn from the top down so each area covers the ones above it.
fn stacked_profiles(report: &Report) -> StackedCurves {
    let present = Profile::ALL.into_iter().enumerate().filter(|(_, p)| {
        report
            .profiles
            .iter()
            .any(|r| r.profile == *p && r.peers > 0)
    });
    let mut stacked: StackedCurves = Vec::new();
    let mut below: Curve = Vec::new();
    for (slot, profile) in present {
        let mut cumulative = vec![(0.0, 0.0)];
        cumulative.extend(report.profile_series.iter().map(|s| {
            (
                s.t,
                s.bytes.get(profile.name()).copied().unwrap_or(0) as f64,
            )
        }));
        let summed: Curve = rates(&cumulative)
            .iter()
            .enumerate()
            .map(|(i, &(t, r))| (t, r + below.get(i).map_or(0.0, |b| b.1)))
            .collect();
        below = summed.clone();
        stacked.push((slot, profile, summed));
    }
    stacked
}

/// The SVG text of the report's plot.
pub fn svg(report: &Report) -> Result<String, PlotError> {
    let leechers = leecher_curves(report);
    let stacked = stacked_profiles(report);
    // The time axis fits the run, however short (a run of 0.3 s is drawn over 0.3 s).
    let t_max = leechers
        .iter()
        .flat_map(|(_, v, r)| v.iter().chain(r).map(|p| p.0))
        .chain(report.profile_series.iter().map(|s| s.t))
        .fold(MIN_SECONDS, f64::max);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (1000, 760)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let (top, bottom) = root.split_vertically(380);
        draw_leechers(&top, report, &leechers, t_max)?;
        draw_profiles(&bottom, &stacked, t_max)?;
        root.present().map_err(drawing)?;
    }
    Ok(text)
}

/// The upper panel: one line per leecher.
fn draw_leechers(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    report: &Report,
    leechers: &LeecherCurves,
    t_max: f64,
) -> Result<(), PlotError> {
    let y_max = leechers
        .iter()
        .flat_map(|(_, v, r)| v.iter().chain(r).map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let caption = format!(
        "leechers' download rate (verified; dashed: received), {} peers, seed {}",
        report.peers.len(),
        report.seed
    );
    let mut chart = rate_chart(area, &caption, t_max, y_max)?;
    for (i, (label, verified, received)) in leechers.iter().enumerate() {
        let colour = LEECHER_COLOURS[i % LEECHER_COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                verified.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(drawing)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        chart
            .draw_series(DashedLineSeries::new(
                received.iter().copied(),
                6,
                4,
                colour.stroke_width(1),
            ))
            .map_err(drawing)?;
        // A line needs two points: a run short enough to have fewer shows its points.
        if verified.len() < 3 {
            chart
                .draw_series(verified.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(drawing)?;
        }
    }
    draw_legend(&mut chart)
}

/// The lower panel: bytes served per second by profile, stacked.
fn draw_profiles(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    stacked: &StackedCurves,
    t_max: f64,
) -> Result<(), PlotError> {
    let y_max = stacked.last().map_or(1.0f64, |(_, _, top)| {
        top.iter().map(|p| p.1).fold(1.0, f64::max)
    }) * 1.1;
    let caption = "bytes served per second, by profile (stacked)";
    let mut chart = rate_chart(area, caption, t_max, y_max)?;
    for (slot, profile, points) in stacked.iter().rev() {
        let colour = PROFILE_COLOURS[*slot];
        chart
            .draw_series(AreaSeries::new(points.iter().copied(), 0.0, colour).border_style(colour))
            .map_err(drawing)?
            .label(profile.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    draw_legend(&mut chart)
}

/// A panel's chart, its mesh drawn: `caption` above, seconds across to `t_max`, MiB/s
/// up to `y_max`.
fn rate_chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    t_max: f64,
    y_max: f64,
) -> Result<RateChart<'a, 'b>, PlotError> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB/s")
        .draw()
        .map_err(drawing)?;
    Ok(chart)
}

/// A panel's chart: seconds across, MiB/s up.
type RateChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    plotters::coord::cartesian::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// The legend of the series labelled on `chart`.
fn draw_legend<'a, 'b: 'a>(chart: &mut RateChart<'a, 'b>) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(drawing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::report::{profile_totals, LeecherReport, LeecherSample, ProfileSample};

    fn report() -> Report {
        let sample = |t: f64, v: u64| LeecherSample {
            t,
            verified_bytes: v,
            received: v,
            uploaded: 0,
            rate: 0.0,
            peers: 3,
            rss_bytes: 1,
            open_files: 1,
        };
        let leecher = LeecherReport {
            index: 0,
            port: 1,
            pid: 1,
            exit_code: Some(0),
            killed: false,
            completed: true,
            completion_secs: Some(2.0),
            exited_after_secs: Some(2.5),
            average_rate: Some(1.0),
            files: None,
            files_right: true,
            hash_failures: 0,
            banned: 0,
            received: 0,
            uploaded: 0,
            verified_this_run: 0,
            waste_ratio: None,
            peak_rss_bytes: 0,
            max_open_files: 0,
            max_peers: 0,
            throughput: vec![sample(1.0, 5 << 20), sample(2.0, 12 << 20)],
            actors: serde_json::Value::Null,
            stats_file: String::new(),
            log_file: String::new(),
        };
        let series = (1..4)
            .map(|t| ProfileSample {
                t: f64::from(t),
                bytes: [("fast".to_string(), u64::from(t as u32) << 20)]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let peers = vec![crate::swarm::report::PeerReport {
            index: 0,
            addr: String::new(),
            profile: Profile::Fast,
            rate: None,
            pieces_at_start: 1,
            lie_permille: 0,
            flaky_up_secs: None,
            flaky_down_secs: None,
            tally: Default::default(),
        }];
        Report {
            seed: 1,
            size: 1,
            piece_size: 1,
            pieces: 1,
            info_hash: String::new(),
            torrent_file: String::new(),
            links: String::new(),
            dry_run: false,
            duration_limit_secs: 1.0,
            elapsed_secs: 1.0,
            timed_out: false,
            outcome: "complete".into(),
            exit_code: 0,
            profiles: profile_totals(&peers),
            peers,
            leechers: vec![leecher],
            profile_series: series,
        }
    }

    #[test]
    fn the_plot_is_an_svg_with_both_panels_and_their_legends() {
        let svg = svg(&report()).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in ["leecher 0", "fast", "by profile", "MiB/s"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn a_run_of_a_third_of_a_second_is_drawn_over_its_own_time_with_its_points() {
        let mut r = report();
        let l = &mut r.leechers[0];
        // One record at completion: the curve is a single point.
        l.throughput.truncate(1);
        l.throughput[0].t = 0.3;
        l.throughput[0].received = 6 << 20;
        for (i, s) in r.profile_series.iter_mut().enumerate() {
            s.t = 0.1 * (i + 1) as f64;
        }
        let svg = svg(&r).unwrap();
        assert!(svg.contains("<circle"), "the single point is not drawn");
        // The axis ends near 0.3 s, not at a whole second: some of its labels are
        // fractions of a second (the rate axis counts in whole MiB/s here).
        let labels: Vec<f64> = svg.lines().filter_map(|l| l.trim().parse().ok()).collect();
        assert!(
            labels.iter().any(|&x| x > 0.0 && x < 0.35)
                && !labels.iter().any(|&x| x > 0.35 && x <= 1.0),
            "the time axis does not fit the run: {labels:?}"
        );
    }

    #[test]
    fn received_is_drawn_dashed_beside_verified() {
        let mut r = report();
        // Bytes come in before the first piece is verified.
        for s in &mut r.leechers[0].throughput {
            s.received = s.verified_bytes + (3 << 20);
        }
        let svg = svg(&r).unwrap();
        assert!(svg.contains("dashed: received"), "the caption does not say");
        // The dashes are short lines of their own: many more than the one verified line
        // and the legend's path.
        let mut solid = report();
        solid.leechers[0].throughput.clear();
        let without = svg_of_lines(&super::svg(&solid).unwrap());
        assert!(svg_of_lines(&svg) >= without + 4, "no dashed line drawn");
    }

    /// Lines and polylines in an SVG text.
    fn svg_of_lines(svg: &str) -> usize {
        svg.matches("<polyline").count() + svg.matches("<line").count()
    }

    #[test]
    fn rates_come_from_differences() {
        let r = rates(&[(0.0, 0.0), (1.0, MIB), (3.0, 5.0 * MIB), (3.0, 9.0 * MIB)]);
        assert_eq!(r, vec![(1.0, 1.0), (3.0, 2.0)]);
    }
}
