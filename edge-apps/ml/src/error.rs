use thiserror::Error;

/// Everything that can go wrong in this crate. Bad input (a malformed model,
/// a wrong shape, NaN samples, a bad config) is always one of these, never a
/// panic.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MlError {
    /// A tensor whose shape and data disagree, or that is too large.
    #[error("invalid tensor: {0}")]
    Tensor(String),

    /// The model file could not be parsed, analysed or optimised.
    #[error("model {name:?}: cannot load: {message}")]
    Load { name: String, message: String },

    /// The model's input has symbolic or unknown dimensions: the caller must
    /// give a concrete shape with [`crate::Model::load_with_shape`].
    #[error(
        "model {name:?}: input shape {shape} is not concrete; give one with load_with_shape \
         (e.g. [1, N])"
    )]
    SymbolicShape { name: String, shape: String },

    /// The model is valid ONNX but not something this crate runs (several
    /// inputs, non-f32 input or output, an oversized input).
    #[error("model {name:?}: unsupported: {reason}")]
    Unsupported { name: String, reason: String },

    /// The input's shape is not the model's input shape.
    #[error("input shape {got:?} does not match the model's input shape {expected:?}")]
    Shape {
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// An input element is NaN or infinite.
    #[error("input element {index} is not finite ({value})")]
    NonFinite { index: usize, value: f32 },

    /// tract failed while running the model.
    #[error("model {name:?}: inference failed: {message}")]
    Inference { name: String, message: String },

    /// The model produced a NaN or infinite anomaly score.
    #[error("stage {stage:?}: model produced a non-finite score ({score})")]
    NonFiniteScore { stage: String, score: f64 },

    /// Every cached model is in use and the cache is at its bound.
    #[error("model cache is full: all {max} models are in use")]
    CacheFull { max: usize },

    /// An invalid [`crate::AnomalyConfig`] or one that does not fit its model.
    #[error("anomaly stage {name:?}: {reason}")]
    Config { name: String, reason: String },
}
