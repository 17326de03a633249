"""Cubes for `prior logp`: 40 MiraBest images (seed 0) and the 10 COSMOS HST stamps, each
cropped to its central square, area-averaged to 64² and divided by its own peak (the built-in
prior's training normalisation). Then:

    python3 notebooks/logp_radio_vs_optical.py          # writes mb40.fits, cos10.fits here
    interf-image prior logp --image mb40.fits --steps 0 --elbo-samples 256
    interf-image prior logp --image cos10.fits --steps 0 --elbo-samples 256
"""
import numpy as np
from astropy.io import fits
def area_matrix(n_in, n_out):
    R = np.zeros((n_out, n_in)); s = n_in / n_out
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        for j in range(int(np.floor(a)), int(np.ceil(b))):
            R[i, j] = (min(b, j + 1) - max(a, j)) / s
    return R
def prep(img):
    h, w = img.shape; n = min(h, w); y0, x0 = (h - n) // 2, (w - n) // 2
    c = img[y0:y0 + n, x0:x0 + n].astype(float)
    R = area_matrix(n, 64); o = R @ c @ R.T
    return o / o.max()
rng = np.random.default_rng(0)
mb = np.load('../shared/data/galaxies/mirabest_train_u8.npy')
print(mb.shape)
idx = rng.choice(len(mb), 40, replace=False)
fits.writeto('mb40.fits', np.stack([prep(mb[i].squeeze()) for i in idx]).astype(np.float32), overwrite=True)
h = fits.open('../shared/data/galaxies/cosmos_hst/real_galaxy_images_23.5_n1.fits')
fits.writeto('cos10.fits', np.stack([prep(x.data) for x in h]).astype(np.float32), overwrite=True)
