//! The embedded demo: a small CNN for the 8×8 digits data set.
//!
//! Architecture (input 1×8×8): conv1 3×3, 1→16, padding 1, ReLU; conv2 3×3, 16→32, padding 1, ReLU;
//! 2×2 max-pool to 32×4×4; fc1 512→64, ReLU; fc2 64→10. Both convolutions keep the 8×8 size, so each
//! applies its kernel at 64 output pixels.

use super::{Inventory, ModelKind};
use crate::space::{LayerInfo, LayerKind};

/// Output pixels of each convolution.
const PIXELS: u64 = 64;

fn layer(name: &str, kind: LayerKind, shape: &[usize], applications: u64) -> LayerInfo {
    let params: u64 = shape.iter().map(|&d| d as u64).product();
    LayerInfo {
        name: name.to_string(),
        kind,
        shape: shape.to_vec(),
        macs: params * applications,
        bias: true,
    }
}

/// The demo's layers.
pub fn inventory() -> Inventory {
    Inventory {
        name: "demo".into(),
        kind: ModelKind::Classifier,
        architecture: "demo-cnn (8x8 digits)".into(),
        default_space: "demo",
        layers: vec![
            layer("conv1", LayerKind::Conv2d, &[16, 1, 3, 3], PIXELS),
            layer("conv2", LayerKind::Conv2d, &[32, 16, 3, 3], PIXELS),
            layer("fc1", LayerKind::Linear, &[64, 512], 1),
            layer("fc2", LayerKind::Linear, &[10, 64], 1),
        ],
    }
}
