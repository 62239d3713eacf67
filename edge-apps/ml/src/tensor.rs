use crate::MlError;

/// Most elements a [`Tensor`] may hold (4 MiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 20;
/// Most dimensions a [`Tensor`] may have.
pub const MAX_RANK: usize = 8;

/// A dense f32 tensor in row-major order (the WIT `tensor` record).
///
/// Always valid: the product of `shape` equals `data.len()` and is at most
/// [`MAX_ELEMENTS`]; the rank is at most [`MAX_RANK`]. An empty shape is a
/// scalar (one element).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, MlError> {
        let elements = element_count(&shape)?;
        if elements != data.len() {
            return Err(MlError::Tensor(format!(
                "shape {shape:?} has {elements} elements but data has {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.data)
    }
}

/// The number of elements of `shape`, checked against the limits.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize, MlError> {
    if shape.len() > MAX_RANK {
        return Err(MlError::Tensor(format!(
            "rank {} is above the limit of {MAX_RANK}",
            shape.len()
        )));
    }
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            MlError::Tensor(format!(
                "shape {shape:?} has more than {MAX_ELEMENTS} elements"
            ))
        })?;
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_consistent_tensors() {
        let t = Tensor::new(vec![2, 3], vec![0.0; 6]).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.data().len(), 6);
        assert_eq!(Tensor::new(vec![], vec![1.5]).unwrap().data(), &[1.5]);
        assert!(Tensor::new(vec![0, 4], vec![]).is_ok());
        let (shape, data) = Tensor::new(vec![1], vec![2.0]).unwrap().into_parts();
        assert_eq!((shape, data), (vec![1], vec![2.0]));
    }

    #[test]
    fn rejects_mismatched_data() {
        assert!(matches!(
            Tensor::new(vec![2, 3], vec![0.0; 5]),
            Err(MlError::Tensor(_))
        ));
        assert!(matches!(
            Tensor::new(vec![], vec![]),
            Err(MlError::Tensor(_))
        ));
    }

    #[test]
    fn rejects_oversized_and_overflowing_shapes() {
        assert!(Tensor::new(vec![MAX_ELEMENTS], vec![0.0; MAX_ELEMENTS]).is_ok());
        let err = Tensor::new(vec![MAX_ELEMENTS + 1], vec![]).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        // The product overflows usize: an error, not a panic or a wrap.
        assert!(Tensor::new(vec![usize::MAX, 2], vec![]).is_err());
        assert!(Tensor::new(vec![1; MAX_RANK + 1], vec![0.0]).is_err());
    }
}
