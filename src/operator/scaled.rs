//! `c · A`: folds a flux scale into an operator, so that samplers working in a prior's
//! normalised pixel units see the data in physical units.

use super::ForwardOperator;

pub struct Scaled<A> {
    pub inner: A,
    pub scale: f32,
}

impl<A: ForwardOperator> ForwardOperator for Scaled<A> {
    fn image_shape(&self) -> [usize; 2] {
        self.inner.image_shape()
    }
    fn data_len(&self) -> usize {
        self.inner.data_len()
    }
    fn forward(&self, image: &[f32], data: &mut [f32]) {
        self.inner.forward(image, data);
        data.iter_mut().for_each(|d| *d *= self.scale);
    }
    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        self.inner.adjoint(data, image);
        image.iter_mut().for_each(|v| *v *= self.scale);
    }
    fn diag_aat(&self) -> Vec<f32> {
        let s2 = self.scale * self.scale;
        self.inner.diag_aat().into_iter().map(|d| d * s2).collect()
    }
}
