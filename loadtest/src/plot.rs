//! `loadtest plot`: throughput and media latency over time, one line per report, as PNG.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

/// Text needs a TrueType font: DejaVu Sans from Debian's fonts-dejavu-core when present.
fn register_font() -> bool {
    const FONTS: [&str; 2] = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"];
    let Some(bytes) = FONTS.iter().find_map(|p| std::fs::read(p).ok()) else { return false };
    // Registered fonts live as long as the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
}

fn chart(
    out: &Path,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    labels: bool,
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(out, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(1.0, f64::max);
    let y_max = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-3) * 1.1;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15).x_label_area_size(40).y_label_area_size(60);
    if labels {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("seconds").y_desc(y_label);
    } else {
        mesh.disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let line = chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?;
        if labels {
            line.label(name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if labels {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(())
}

/// Writes `throughput.png` and `latency.png` into `dir` from the given JSON reports.
pub fn plot(dir: &Path, reports: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let labels = register_font();
    let mut throughput = Vec::new();
    let mut latency = Vec::new();
    for path in reports {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let Ok(r) = serde_json::from_str::<Report>(&text) else { continue };
        let name = path.file_stem().map_or_else(|| r.mode.clone(), |s| s.to_string_lossy().into_owned());
        throughput.push((name.clone(), r.throughput.iter().map(|s| (s.t as f64, s.mbps)).collect()));
        // Seconds without timed packets have no p99: left out, not drawn as zero.
        latency.push((name, r.throughput.iter().filter_map(|s| Some((s.t as f64, s.p99_ms?))).collect()));
    }
    anyhow::ensure!(!throughput.is_empty(), "no readable reports");
    std::fs::create_dir_all(dir)?;
    chart(&dir.join("throughput.png"), "Media received by viewers", "Mbit/s", &throughput, labels)?;
    chart(&dir.join("latency.png"), "Media latency p99 per second", "ms", &latency, labels)?;
    Ok(())
}
