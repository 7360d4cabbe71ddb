//! PNG plots drawn with plotters and a bundled font (DejaVu Sans), so they render on a
//! headless machine without system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the bundled font once; every plot calls this first.
pub fn register_font() {
    REGISTER.call_once(|| {
        // The bundled file is a valid TrueType font; a failure here is a packaging bug.
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| ())
            .expect("the bundled DejaVu Sans font loads");
    });
}

/// One named horizontal reference line.
#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    pub value: f64,
}

/// Trailing moving average over `window` points (shorter at the start).
pub fn moving_average(xs: &[f64], window: usize) -> Vec<f64> {
    let w = window.max(1);
    let mut out = Vec::with_capacity(xs.len());
    let mut sum = 0.0;
    for i in 0..xs.len() {
        sum += xs[i];
        if i >= w {
            sum -= xs[i - w];
        }
        out.push(sum / (i + 1).min(w) as f64);
    }
    out
}

/// Series colours.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// Turns a plotters error into one that names the picture.
pub fn plot_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Plot { path: path.to_path_buf(), message }
}

/// Draws the legend of `chart` (lower right, labels at `font` px) and writes the picture.
pub fn finish_chart<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    font: u32,
    path: &Path,
) -> Result<()> {
    finish_chart_at(chart, root, font, SeriesLabelPosition::LowerRight, path)
}

/// [`finish_chart`] with the legend at `position`.
pub fn finish_chart_at<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    font: u32,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<()> {
    let err = plot_err(path);
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", font))
        .position(position)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

/// Bounds that show the bulk of `xs` (from its 0.5th to its 99.5th percentile): a few
/// extreme episodes must not squeeze everything else into a thin band.
fn robust_bounds(xs: &[f64]) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some((at(0.005), at(0.995)))
}

/// A line chart of a per-episode series with its moving average, reference lines and,
/// when given, a curve of points (the evaluation during training). The y axis fits the
/// moving average, the references and the curve (single episodes run off the frame) and
/// leaves room above them for the legend; episodes are labelled as integers.
#[allow(clippy::too_many_arguments)]
pub fn series_plot(
    path: &Path,
    title: &str,
    y_label: &str,
    series_name: &str,
    values: &[Option<f64>],
    window: usize,
    references: &[Reference],
    curve: Option<(&str, &[(f64, f64)])>,
) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let points: Vec<(f64, f64)> =
        values.iter().enumerate().filter_map(|(i, v)| v.filter(|x| x.is_finite()).map(|x| (i as f64, x))).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    let avg = moving_average(&ys, window);
    // The frame fits what carries the information (the moving average, the reference
    // lines, the curve); single episodes scatter far wider and run off it. Without any of
    // those, the bulk of the series.
    let curve_ys: Vec<f64> = curve.map_or(Vec::new(), |(_, c)| c.iter().map(|p| p.1).collect());
    let (y0, y1) = if window > 1 || !references.is_empty() || !curve_ys.is_empty() {
        let (a, b) = bounds(avg.iter().copied().chain(references.iter().map(|r| r.value)).chain(curve_ys));
        let pad = (b - a) * 0.15;
        (a - pad, b + pad)
    } else {
        let (lo, hi) = robust_bounds(&ys).unwrap_or((0.0, 1.0));
        bounds([lo, hi].into_iter())
    };
    // Room for the legend above the data: a line of legend is about 4% of the height.
    let lines = 2 + references.len() + usize::from(curve.is_some());
    let y1 = y1 + (y1 - y0) * (0.05 * lines as f64 + 0.05);
    let x1 = (values.len().max(2) - 1) as f64;

    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("episode")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{:.0}", x))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let light = RGBColor(31, 119, 180).mix(0.15);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), light.stroke_width(1)))
        .map_err(|e| err(e.to_string()))?
        .label(series_name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], light.stroke_width(2)));
    let dark = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(points.iter().zip(&avg).map(|(p, a)| (p.0, *a)), dark.stroke_width(3)))
        .map_err(|e| err(e.to_string()))?
        .label(format!("{series_name}, moving average of {window}"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], dark.stroke_width(3)));
    for (k, r) in references.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let v = r.value;
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, v), (x1, v)], 8, 5, color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(format!("{} ({:.2})", r.name, v))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if let Some((name, c)) = curve {
        let black = RGBColor(20, 20, 20);
        chart
            .draw_series(LineSeries::new(c.iter().copied(), black.stroke_width(2)).point_size(5))
            .map_err(|e| err(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, black.filled()));
    }
    finish_chart_at(&mut chart, &root, 15, SeriesLabelPosition::UpperRight, path)
}

/// One named series of (x, y) points for [`loglog_plot`].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A log-log chart of several series with markers (how a cost grows with a size).
/// Points that are not finite and positive are left out (a log axis cannot show them).
pub fn loglog_plot(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    loglog_plot_in(path, title, x_label, y_label, series, &PALETTE)
}

/// Twenty colours that stay apart (Tableau 20), for charts of more series than [`PALETTE`].
pub const WIDE_PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// [`loglog_plot`] in the colours of `palette`.
pub fn loglog_plot_in(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    palette: &[RGBColor],
) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let ok = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite() && p.0 > 0.0 && p.1 > 0.0;
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().filter(ok).copied()).collect();
    if all.is_empty() {
        return Err(err("no positive values to plot".into()));
    }
    let range = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        // Half a decade of room on each side.
        (lo / 3.0, hi * 3.0)
    };
    let (x0, x1) = range(&mut all.iter().map(|p| p.0));
    let (y0, y1) = range(&mut all.iter().map(|p| p.1));
    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (k, s) in series.iter().enumerate() {
        let color = palette[k % palette.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().filter(ok).copied().collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled()))).map_err(|e| err(e.to_string()))?;
    }
    finish_chart(&mut chart, &root, 14, path)
}

/// A line with its 95% band: (x, mean, half-width) points.
pub type Band = Vec<(f64, f64, f64)>;

/// Lines with 95% bands: per series a name and its points.
pub fn bands_plot(path: &Path, caption: &str, x_desc: &str, y_desc: &str, series: &[(String, Band)]) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let x1 = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0, f64::max);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in series.iter().flat_map(|s| s.1.iter()) {
        y0 = y0.min(p.1 - p.2);
        y1 = y1.max(p.1 + p.2);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(0.05);
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (k, (label, pts)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let mut band: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1 + p.2)).collect();
        band.extend(pts.iter().rev().map(|p| (p.0, p.1 - p.2)));
        chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15).filled()))).map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(3)))
            .map_err(|e| err(e.to_string()))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    finish_chart(&mut chart, &root, 14, path)
}

/// Stacked charts sharing an x axis (`x_desc`: the steps of a session, the days of a
/// calendar): one panel per entry of `panels` (its y label and, per series, a name and
/// its points), series coloured alike across panels.
pub fn panels_plot(path: &Path, title: &str, x_desc: &str, panels: &[(&str, Vec<Series>)]) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let x_max = panels.iter().flat_map(|(_, s)| s.iter().flat_map(|s| s.points.iter().map(|p| p.0))).fold(0.0f64, f64::max);
    let root = BitMapBackend::new(path, (1000, 300 * panels.len() as u32 + 60)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, (y_label, series)) in areas.iter().zip(panels) {
        let (y0, y1) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        let head = (y1 - y0) * 0.35;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..x_max + 0.5, y0..y1 + head)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(*y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_labels((x_max as usize + 2).min(25))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (k, s) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_trailing() {
        let m = moving_average(&[1.0, 3.0, 5.0, 7.0], 2);
        assert_eq!(m, vec![1.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn draws_a_png_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let values: Vec<Option<f64>> = (0..50).map(|i| Some((i as f64).sin())).collect();
        series_plot(&path, "t", "y", "s", &values, 5, &[Reference { name: "r".into(), value: 0.5 }], None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn loglog_draws_and_refuses_nothing_to_draw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.png");
        let s = Series { name: "a".into(), points: vec![(1e3, 1e-6), (1e6, 1e-3), (1e7, f64::NAN)] };
        loglog_plot(&path, "t", "x", "y", &[s]).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"\x89PNG");
        let empty = Series { name: "b".into(), points: vec![(0.0, 1.0)] };
        assert!(loglog_plot(&dir.path().join("e.png"), "t", "x", "y", &[empty]).is_err());
    }
}
