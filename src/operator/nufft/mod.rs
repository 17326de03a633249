//! NUFFT between an image and visibilities.
