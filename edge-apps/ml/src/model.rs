use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::{
    onnx, tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    TractError, TypedFact, TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::Factoid;

use crate::tensor::element_count;
use crate::{MlError, Tensor};

/// A loaded, optimised ONNX model with one f32 input of a fixed shape.
///
/// Immutable once loaded: [`Model::run`] takes `&self`, so one `Arc<Model>`
/// serves any number of threads.
pub struct Model {
    name: String,
    sha256: String,
    input_shape: Vec<usize>,
    output_shape: Option<Vec<usize>>,
    plan: Arc<TypedRunnableModel>,
}

// Shared across threads behind `Arc`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
};

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("input_shape", &self.input_shape)
            .field("output_shape", &self.output_shape)
            .finish_non_exhaustive()
    }
}

/// Runs a tract call, turning both its errors and any panic inside it (tract
/// is not hardened against hostile model files) into a message.
fn guarded<T>(f: impl FnOnce() -> tract_onnx::prelude::TractResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".to_owned());
            Err(format!("tract panicked: {what}"))
        }
    }
}

impl Model {
    /// Parses, optimises and plans an ONNX model. The input shape comes from
    /// the model file; a model with symbolic dimensions (e.g. a `batch`
    /// dimension) is refused with [`MlError::SymbolicShape`]: use
    /// [`Model::load_with_shape`].
    pub fn load(name: &str, onnx_bytes: &[u8]) -> Result<Model, MlError> {
        Self::load_inner(name, onnx_bytes, None)
    }

    /// Like [`Model::load`], with the input shape given by the caller (it
    /// overrides the model file's).
    pub fn load_with_shape(
        name: &str,
        onnx_bytes: &[u8],
        input_shape: &[usize],
    ) -> Result<Model, MlError> {
        Self::load_inner(name, onnx_bytes, Some(input_shape))
    }

    fn load_inner(name: &str, bytes: &[u8], shape: Option<&[usize]>) -> Result<Model, MlError> {
        let started = Instant::now();
        let load_err = |message: String| MlError::Load {
            name: name.to_owned(),
            message,
        };
        let unsupported = |reason: String| MlError::Unsupported {
            name: name.to_owned(),
            reason,
        };
        if bytes.is_empty() {
            return Err(load_err("the model file is empty".to_owned()));
        }

        let model = guarded(|| onnx().model_for_read(&mut &bytes[..])).map_err(load_err)?;
        let inputs = guarded(|| Ok(model.input_outlets()?.len())).map_err(load_err)?;
        if inputs != 1 {
            return Err(unsupported(format!(
                "the model has {inputs} inputs; exactly one is supported"
            )));
        }
        let outputs = guarded(|| Ok(model.output_outlets()?.len())).map_err(load_err)?;
        if outputs == 0 {
            return Err(load_err("the model has no outputs".to_owned()));
        }
        let fact: InferenceFact = guarded(|| Ok(model.input_fact(0)?.clone())).map_err(load_err)?;
        if let Some(dt) = fact.datum_type.concretize() {
            if dt != DatumType::F32 {
                return Err(unsupported(format!("input type is {dt:?}, not f32")));
            }
        }
        let input_shape: Vec<usize> = match shape {
            Some(s) => s.to_vec(),
            None => guarded(|| fact.shape.as_concrete_finite())
                .ok()
                .flatten()
                .map(|s| s.to_vec())
                .ok_or_else(|| MlError::SymbolicShape {
                    name: name.to_owned(),
                    shape: format!("{:?}", fact.shape),
                })?,
        };
        element_count(&input_shape).map_err(|e| unsupported(format!("input: {e}")))?;

        let typed = guarded(|| {
            model
                .with_input_fact(0, TypedFact::dt_shape(DatumType::F32, &*input_shape).into())?
                .into_optimized()
        })
        .map_err(load_err)?;
        let out: TypedFact = guarded(|| Ok(typed.output_fact(0)?.clone())).map_err(load_err)?;
        if out.datum_type != DatumType::F32 {
            return Err(unsupported(format!(
                "first output type is {:?}, not f32",
                out.datum_type
            )));
        }
        let output_shape = out.shape.as_concrete().map(<[usize]>::to_vec);
        let plan = guarded(|| typed.into_runnable()).map_err(load_err)?;

        let sha256 = hex::encode(Sha256::digest(bytes));
        tracing::debug!(
            model = name,
            sha256 = %sha256,
            ?input_shape,
            ?output_shape,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "loaded ONNX model"
        );
        Ok(Model {
            name: name.to_owned(),
            sha256,
            input_shape,
            output_shape,
            plan,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hex SHA-256 of the model file's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The exact shape [`Model::run`] accepts.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The first output's shape, when tract knows it before running.
    pub fn output_shape(&self) -> Option<&[usize]> {
        self.output_shape.as_deref()
    }

    /// Runs the model on `input` and returns its first output.
    ///
    /// `input` must have exactly [`Model::input_shape`] (else
    /// [`MlError::Shape`]) and only finite elements (else
    /// [`MlError::NonFinite`]).
    pub fn run(&self, input: &Tensor) -> Result<Tensor, MlError> {
        if input.shape() != self.input_shape.as_slice() {
            return Err(MlError::Shape {
                expected: self.input_shape.clone(),
                got: input.shape().to_vec(),
            });
        }
        if let Some((index, &value)) = input
            .data()
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(MlError::NonFinite { index, value });
        }
        let infer_err = |message: String| MlError::Inference {
            name: self.name.clone(),
            message,
        };
        let (shape, data) = guarded(|| {
            let x = tract_onnx::prelude::Tensor::from_shape(input.shape(), input.data())?;
            let outputs = self.plan.run(tvec!(x.into_tvalue()))?;
            let first = outputs
                .first()
                .ok_or_else(|| TractError::msg("the model produced no output"))?;
            let view = first.to_plain_array_view::<f32>()?;
            Ok((
                view.shape().to_vec(),
                view.iter().copied().collect::<Vec<f32>>(),
            ))
        })
        .map_err(infer_err)?;
        Tensor::new(shape, data).map_err(|e| infer_err(format!("output: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testonnx::{self, vibration_ae, Dim};
    use proptest::prelude::*;

    fn ae() -> Model {
        Model::load("vibration-ae", &vibration_ae::bytes()).unwrap()
    }

    fn mse(x: &[f32], y: &[f32]) -> f64 {
        x.iter()
            .zip(y)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            / x.len() as f64
    }

    #[test]
    fn loads_the_example_model() {
        let m = ae();
        assert_eq!(m.name(), "vibration-ae");
        assert_eq!(m.input_shape(), &[1, 32]);
        assert_eq!(m.output_shape(), Some(&[1usize, 32][..]));
        assert_eq!(m.sha256().len(), 64);
        assert!(format!("{m:?}").contains("vibration-ae"));
    }

    #[test]
    fn example_model_separates_the_fixture_windows() {
        let m = ae();
        let threshold = vibration_ae::readme_threshold();
        for (file, anomalous) in [("healthy.json", false), ("anomalous.json", true)] {
            let (json_threshold, windows) = vibration_ae::windows(file);
            assert_eq!(json_threshold, threshold, "{file} and README disagree");
            assert!(windows.len() >= 3);
            for w in windows {
                let x = Tensor::new(vec![1, 32], w.x.clone()).unwrap();
                let y = m.run(&x).unwrap();
                assert_eq!(y.shape(), &[1, 32]);
                let got = mse(&w.x, y.data());
                let rel = (got - w.mse).abs() / w.mse;
                assert!(
                    rel < 1e-4,
                    "{file} {}: rust {got} numpy {} (rel {rel:e})",
                    w.kind,
                    w.mse
                );
                assert_eq!(
                    got > threshold,
                    anomalous,
                    "{file} {}: mse {got} vs threshold {threshold}",
                    w.kind
                );
            }
        }
    }

    #[test]
    fn garbage_and_empty_bytes_are_errors() {
        for bytes in [
            &b""[..],
            b"not an onnx model",
            &[0xff; 64],
            &[0x0a, 0xff, 0xff, 0xff],
        ] {
            let err = Model::load("junk", bytes).unwrap_err();
            assert!(matches!(err, MlError::Load { .. }), "{err:?}");
            assert!(err.to_string().contains("junk"), "{err}");
        }
    }

    #[test]
    fn truncated_model_is_an_error() {
        let bytes = vibration_ae::bytes();
        for cut in [1, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            let err = Model::load("cut", &bytes[..cut]).unwrap_err();
            assert!(matches!(err, MlError::Load { .. }), "cut at {cut}: {err:?}");
        }
    }

    #[test]
    fn wrong_shape_is_a_shape_error() {
        let m = ae();
        for shape in [vec![32], vec![1, 31], vec![32, 1], vec![2, 32]] {
            let n = shape.iter().product();
            let err = m
                .run(&Tensor::new(shape.clone(), vec![0.0; n]).unwrap())
                .unwrap_err();
            assert_eq!(
                err,
                MlError::Shape {
                    expected: vec![1, 32],
                    got: shape
                }
            );
        }
    }

    #[test]
    fn non_finite_input_is_refused() {
        let m = ae();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut data = vec![0.1; 32];
            data[7] = bad;
            let err = m.run(&Tensor::new(vec![1, 32], data).unwrap()).unwrap_err();
            assert!(
                matches!(err, MlError::NonFinite { index: 7, .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn symbolic_dims_need_a_shape() {
        let bytes = testonnx::identity(&[Dim::Param("batch"), Dim::Value(4)]);
        let err = Model::load("dyn", &bytes).unwrap_err();
        assert!(matches!(err, MlError::SymbolicShape { .. }), "{err:?}");
        assert!(err.to_string().contains("load_with_shape"), "{err}");

        let m = Model::load_with_shape("dyn", &bytes, &[2, 4]).unwrap();
        assert_eq!(m.input_shape(), &[2, 4]);
        assert_eq!(m.output_shape(), Some(&[2usize, 4][..]));
        let x = Tensor::new(vec![2, 4], (0..8).map(|i| i as f32).collect()).unwrap();
        assert_eq!(m.run(&x).unwrap(), x);
    }

    #[test]
    fn unsupported_models_are_refused_clearly() {
        let err = Model::load("two", &testonnx::add_two()).unwrap_err();
        assert!(matches!(err, MlError::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("2 inputs"), "{err}");

        let ints = testonnx::model(
            &[testonnx::node("Identity", &["x"], &["y"])],
            &[],
            &[testonnx::value_info(
                "x",
                testonnx::INT64,
                &[Dim::Value(1), Dim::Value(4)],
            )],
            &[testonnx::value_info(
                "y",
                testonnx::INT64,
                &[Dim::Value(1), Dim::Value(4)],
            )],
        );
        let err = Model::load("ints", &ints).unwrap_err();
        assert!(matches!(err, MlError::Unsupported { .. }), "{err:?}");

        let huge = testonnx::identity(&[Dim::Value(1 << 21)]);
        let err = Model::load("huge", &huge).unwrap_err();
        assert!(matches!(err, MlError::Unsupported { .. }), "{err:?}");
        let err =
            Model::load_with_shape("huge", &testonnx::identity(&[Dim::Param("n")]), &[1 << 21])
                .unwrap_err();
        assert!(matches!(err, MlError::Unsupported { .. }), "{err:?}");
    }

    #[test]
    fn an_incompatible_given_shape_is_an_error() {
        // The model's MatMul needs [_, 4]; [1, 5] cannot be planned.
        let bytes = testonnx::dot(&[0.25; 4]);
        let err = Model::load_with_shape("dot", &bytes, &[1, 5]).unwrap_err();
        assert!(matches!(err, MlError::Load { .. }), "{err:?}");
    }

    #[test]
    fn runs_from_many_threads() {
        let m = std::sync::Arc::new(ae());
        let (_, windows) = vibration_ae::windows("healthy.json");
        let x = Tensor::new(vec![1, 32], windows[0].x.clone()).unwrap();
        let want = m.run(&x).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        assert_eq!(m.run(&x).unwrap(), want);
                    }
                });
            }
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(Model::load("fuzz", &bytes).is_err());
        }

        #[test]
        fn corrupted_model_never_panics(pos in 0usize..2475, byte in any::<u8>(), cut in 0usize..2475) {
            let mut bytes = vibration_ae::bytes();
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            bytes.truncate(cut.max(pos + 1));
            if let Ok(m) = Model::load("fuzz", &bytes) {
                let n = m.input_shape().iter().product();
                let _ = m.run(&Tensor::new(m.input_shape().to_vec(), vec![0.5; n]).unwrap());
            }
        }
    }
}
