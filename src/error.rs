//! Errors shared by the layers.

use std::fmt;

/// An input whose shape does not fit a layer.
///
/// Layers panic with this message when `forward`/`backward` receive a wrong shape (a
/// programming error); [`crate::Layer::output_shape`] returns it so callers that build
/// networks from user input (the command line's `--arch`) can refuse them politely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    /// The layer that refused the shape, for example `ConvLayer(3→16, 3×3)`.
    pub layer: String,
    /// What the layer accepts, in words, for example `(n_b, 3, rows, cols)`.
    pub expected: String,
    /// The shape it was given.
    pub actual: Vec<usize>,
}

impl ShapeError {
    /// Builds the error for `layer`, which expected `expected` and got `actual`.
    pub fn new(layer: impl Into<String>, expected: impl Into<String>, actual: &[usize]) -> Self {
        Self {
            layer: layer.into(),
            expected: expected.into(),
            actual: actual.to_vec(),
        }
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected an input of shape {}, got {:?}",
            self.layer, self.expected, self.actual
        )
    }
}

impl std::error::Error for ShapeError {}
