//! Plots and reports (plotters with an embedded font; no system libraries).

pub mod denoise;
pub mod html;
pub mod image_plot;
pub mod lens;
pub mod plot_util;
pub mod posterior;
pub mod validate;
