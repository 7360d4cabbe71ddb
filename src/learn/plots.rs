//! The pictures of `fypsim learn`: training curves, a confusion matrix, ROC curves.

use std::path::Path;

use plotters::prelude::*;

use super::EpochRow;
use crate::output::plot::{finish_chart_at, panels_plot, plot_err, register_font, Series, PALETTE};
use crate::Result;

/// training.png: per model the training and validation loss, and the validation metric,
/// by epoch.
pub fn training_plot(path: &Path, rows: &[EpochRow], metric: &str) -> Result<()> {
    let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    let mut losses = Vec::new();
    let mut metrics = Vec::new();
    for m in &models {
        let mine: Vec<&EpochRow> = rows.iter().filter(|r| r.model == *m).collect();
        losses.push(Series {
            name: format!("{m} training"),
            points: mine.iter().map(|r| (r.epoch as f64, r.train_loss)).collect(),
        });
        losses.push(Series {
            name: format!("{m} validation"),
            points: mine.iter().map(|r| (r.epoch as f64, r.valid_loss)).collect(),
        });
        metrics.push(Series { name: m.to_string(), points: mine.iter().map(|r| (r.epoch as f64, r.valid_metric)).collect() });
    }
    panels_plot(path, "training", "epoch", &[("loss (nats per target)", losses), (metric, metrics)])
}

/// confusion.png: counts by observed (rows) and predicted (columns) class, shaded by the
/// share of the row.
pub fn confusion_plot(path: &Path, title: &str, classes: &[&str], m: &[Vec<u64>]) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let k = classes.len();
    let root = BitMapBackend::new(path, (760, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..k as f64, 0.0..k as f64)
        .map_err(|e| err(e.to_string()))?;
    let label = |v: &f64| {
        let i = v.floor() as usize;
        if (v - i as f64 - 0.5).abs() < 1e-9 && i < k {
            classes[i].to_string()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted")
        .y_desc("observed")
        .x_labels(2 * k + 1)
        .y_labels(2 * k + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&|v| label(&(k as f64 - v)))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (r, row) in m.iter().enumerate() {
        let total = row.iter().sum::<u64>().max(1) as f64;
        for (c, &n) in row.iter().enumerate() {
            let share = n as f64 / total;
            let y = (k - 1 - r) as f64;
            let shade = RGBColor((255.0 - 224.0 * share) as u8, (255.0 - 136.0 * share) as u8, (255.0 - 75.0 * share) as u8);
            chart
                .draw_series(std::iter::once(Rectangle::new([(c as f64, y), (c as f64 + 1.0, y + 1.0)], shade.filled())))
                .map_err(|e| err(e.to_string()))?;
            let color = if share > 0.6 { WHITE } else { BLACK };
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{n}\n{:.0}%", 100.0 * share),
                    (c as f64 + 0.38, y + 0.55),
                    ("sans-serif", 17).into_font().color(&color),
                )))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// roc.png: ROC curves (false-positive rate, true-positive rate), one per named scorer.
pub fn roc_plot(path: &Path, title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    register_font();
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (760, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("false-positive rate")
        .y_desc("true-positive rate")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(DashedLineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], 6, 4, BLACK.mix(0.4).stroke_width(1)))
        .map_err(|e| err(e.to_string()))?;
    for (i, (name, pts)) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    finish_chart_at(&mut chart, &root, 15, SeriesLabelPosition::LowerRight, path)
}
