//! The pictures a training run leaves: the loss curves and the first layer's filters.

use anyhow::{Context, Result};
use image::{ImageEncoder, RgbImage};
use plotters::prelude::*;
use plotters::style::FontStyle;
use scratchnet::checkpoint::write_atomic;
use scratchnet::ndarray::ArrayViewD;
use std::path::Path;
use std::sync::Once;

/// The font family every label uses; registered from bytes compiled into the binary, so
/// the pictures need no system fonts.
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Ubuntu Light, shipped inside the `epaint_default_fonts` crate.
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TrueType font"));
    });
}

/// Encodes an RGB image as PNG and writes it atomically.
pub fn save_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .context("encoding PNG")?;
    write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// One epoch's losses for the plot.
pub struct LossPoint {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub train: f64,
    /// Validation loss, if validation is on.
    pub val: Option<f64>,
}

/// Size of the loss plot.
pub const LOSS_PLOT_SIZE: (u32, u32) = (900, 560);

/// Draws training and validation loss per epoch, titled with the test accuracy.
pub fn loss_plot(path: &Path, points: &[LossPoint], title: &str) -> Result<()> {
    register_font();
    let (w, h) = LOSS_PLOT_SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let last = points.last().map_or(1, |p| p.epoch).max(2);
        let max = points
            .iter()
            .flat_map(|p| [Some(p.train), p.val])
            .flatten()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(1f64..last as f64, 0f64..(max * 1.1).max(1e-3))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("cross-entropy loss")
            .axis_desc_style((FONT, 20))
            .label_style((FONT, 16))
            .x_labels(last.min(20))
            .x_label_formatter(&|x| {
                if x.fract().abs() < 1e-9 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .draw()?;
        let train: Vec<(f64, f64)> = points.iter().map(|p| (p.epoch as f64, p.train)).collect();
        chart
            .draw_series(LineSeries::new(train.clone(), BLUE.stroke_width(3)))?
            .label("training loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(3)));
        chart.draw_series(train.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
        let val: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|p| p.val.map(|v| (p.epoch as f64, v)))
            .collect();
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.clone(), RED.stroke_width(3)))?
                .label("validation loss")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3)));
            chart.draw_series(val.iter().map(|&p| Circle::new(p, 4, RED.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    let image = RgbImage::from_raw(w, h, buf).expect("buffer has w·h·3 bytes");
    save_png(path, &image)
}

/// Pixels per filter tap in the filter picture.
pub const FILTER_SCALE: u32 = 16;
/// White gap between filters.
pub const FILTER_GAP: u32 = 4;

/// The filter grid's size for `n` filters of `h × h` taps: (columns, width, height).
pub fn filter_grid_size(n: usize, h: usize) -> (u32, u32, u32) {
    let cols = (n as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (n as u32).div_ceil(cols);
    let cell = h as u32 * FILTER_SCALE;
    (
        cols,
        FILTER_GAP + cols * (cell + FILTER_GAP),
        FILTER_GAP + rows * (cell + FILTER_GAP),
    )
}

/// Draws first-layer filters `(n_o, n_i, h, h)` as small images on a grid, each normalised
/// to [0, 1] on its own and enlarged `FILTER_SCALE` times (colour for 3 input channels,
/// grey otherwise), like the AlexNet first-layer figure.
pub fn filters_png(path: &Path, w: ArrayViewD<'_, f32>) -> Result<()> {
    let shape = w.shape().to_vec();
    anyhow::ensure!(
        shape.len() == 4 && shape[2] == shape[3],
        "the first layer is not a convolution (weights of shape {shape:?})"
    );
    let (n, c, h) = (shape[0], shape[1], shape[2]);
    let (cols, width, height) = filter_grid_size(n, h);
    let mut img = RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let cell = h as u32 * FILTER_SCALE;
    for f in 0..n {
        let filter = w.index_axis(scratchnet::ndarray::Axis(0), f);
        let (lo, hi) = filter
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (x0, y0) = (
            FILTER_GAP + (f as u32 % cols) * (cell + FILTER_GAP),
            FILTER_GAP + (f as u32 / cols) * (cell + FILTER_GAP),
        );
        for r in 0..h {
            for q in 0..h {
                let level = |ch: usize| (((filter[[ch, r, q]] - lo) / span) * 255.0).round() as u8;
                let rgb = if c == 3 {
                    [level(0), level(1), level(2)]
                } else {
                    [level(0); 3]
                };
                for dy in 0..FILTER_SCALE {
                    for dx in 0..FILTER_SCALE {
                        img.put_pixel(
                            x0 + q as u32 * FILTER_SCALE + dx,
                            y0 + r as u32 * FILTER_SCALE + dy,
                            image::Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    save_png(path, &img)
}
