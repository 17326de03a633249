use super::OperatorError;

/// Pixel grid of a sky image in direction cosines (SIN projection about the phase centre).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageGeometry {
    pub nx: usize,
    pub ny: usize,
    /// Pixel size along l (RA), radians, positive.
    pub dx: f64,
    /// Pixel size along m (Dec), radians, positive.
    pub dy: f64,
}

impl ImageGeometry {
    pub fn new(nx: usize, ny: usize, dx: f64, dy: f64) -> Result<Self, OperatorError> {
        if nx < 8 || ny < 8 || !nx.is_multiple_of(2) || !ny.is_multiple_of(2) {
            return Err(OperatorError::BadImageSize { ny, nx });
        }
        for d in [dx, dy] {
            if !(d.is_finite() && d > 0.0) {
                return Err(OperatorError::BadPixelScale(d));
            }
        }
        Ok(Self { nx, ny, dx, dy })
    }

    pub fn len(&self) -> usize {
        self.nx * self.ny
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Direction cosines `(l, m)` of pixel `(iy, ix)`.
    pub fn lm(&self, iy: usize, ix: usize) -> (f64, f64) {
        let l = (self.nx as f64 / 2.0 - ix as f64) * self.dx;
        let m = (iy as f64 - self.ny as f64 / 2.0) * self.dy;
        (l, m)
    }
}
