//! FITS images in and out, with a WCS as WSClean writes it.
