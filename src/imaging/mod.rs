//! Classic imaging products: weighting, dirty image, PSF.
