"""Gain-free fit of sky models to the VLBA 3C 279 data: closure-phase and log-closure-amplitude
chi^2 per closure (linearised thermal variances, diagonal: the minimal sets' correlations are
ignored), on snapshots with every baseline. Closure phases: triangles through the first
station; log closure amplitudes: a non-redundant set chosen greedily by rank.

    python3 notebooks/vlba_closure_chi2.py MODEL.fits [MODEL2.fits ...]   # Jy/pixel, SIN grid

Conventions as in vlba_fit_floor.py (V = sum I exp(+2 pi i (u l + v m)), WEIGHT_SPECTRUM,
sigma^2 = f / w with the successive-difference f of `interf-image image`).
"""
import numpy as np, sys
from astropy.io import fits
from casacore.tables import table
from itertools import combinations
ms='../shared/data/ms/vlba_3c279_43ghz.ms'; f=0.08534
t=table(ms,ack=False); d=t.getcol('DATA')[:,0,:]; ws=t.getcol('WEIGHT_SPECTRUM')[:,0,:]
I=0.5*(d[:,0]+d[:,3]); w=2*np.minimum(ws[:,0],ws[:,3])
a1=t.getcol('ANTENNA1'); a2=t.getcol('ANTENNA2'); tm=t.getcol('TIME')
nu=table(ms+'/SPECTRAL_WINDOW',ack=False).getcol('CHAN_FREQ')[0,0]
u,v,_=(t.getcol('UVW')*nu/299792458.0).T
sig=np.sqrt(f/w)
def model_vis(path):
    h=fits.open(path)[0]; m=h.data.squeeze().astype(float); hd=h.header
    yy,xx=np.nonzero(m)
    l=np.radians((xx+1-hd['CRPIX1'])*hd['CDELT1']); mm=np.radians((yy+1-hd['CRPIX2'])*hd['CDELT2'])
    return np.exp(2j*np.pi*(np.outer(u,l)+np.outer(v,mm)))@m[yy,xx]
# closure phases with reference-antenna triangles; LCA with quadrangles (ref, ant1, i, j) minimal set
def stats(M):
    chi_cp=[];chi_la=[]
    for T in np.unique(tm):
        rows=np.where(tm==T)[0]
        bl={(min(a1[r],a2[r]),max(a1[r],a2[r])):r for r in rows}
        def o(V,p,q):
            r=bl[(min(p,q),max(p,q))]; z=V[r]; return z if a1[r]==p else np.conj(z)
        def s(p,q): r=bl[(min(p,q),max(p,q))]; return sig[r]
        ants=sorted(set(a1[rows])|set(a2[rows]))
        full=all((min(p,q),max(p,q)) in bl for p,q in combinations(ants,2))
        if not full or len(ants)<4: continue
        r0=ants[0]
        for i,j in combinations(ants[1:],2):
            psi=lambda V: np.angle(o(V,r0,i)*o(V,i,j)*o(V,j,r0))
            e2=sum((s(p,q)/abs(o(I,p,q)))**2 for p,q in [(r0,i),(i,j),(j,r0)])
            dphi=np.angle(np.exp(1j*(psi(I)-psi(M))))
            chi_cp.append(dphi**2/e2)
        # minimal LCA set (ehtim-like): quadrangles (r0, r1, i, j) for i<j in rest, plus (r0, i, r1?...)
        # use greedy rank over all quadrangles (a,b,c,d) with pairing ab cd / ac bd
        B=list(bl.keys()); col={b:k for k,b in enumerate(B)}
        basis=[]
        for q4 in combinations(ants,4):
            a,b,c,dd=q4
            for p,q,r,tt in [(a,b,c,dd),(a,c,b,dd),(a,dd,b,c)]:
                vec=np.zeros(len(B))
                for (x,y),sg in [((p,q),1),((r,tt),1),((p,r),-1),((q,tt),-1)]: vec[col[(min(x,y),max(x,y))]]=sg
                for bb in basis: vec-=bb*(vec@bb)
                nrm=np.linalg.norm(vec)
                if nrm<1e-9: continue
                basis.append(vec/nrm)
                L=lambda V: np.log(abs(o(V,p,q)))+np.log(abs(o(V,r,tt)))-np.log(abs(o(V,p,r)))-np.log(abs(o(V,q,tt)))
                e2=sum((s(x,y)/abs(o(I,x,y)))**2 for x,y in [(p,q),(r,tt),(p,r),(q,tt)])
                chi_la.append((L(I)-L(M))**2/e2)
    return np.mean(chi_cp),len(chi_cp),np.mean(chi_la),len(chi_la)
for name in sys.argv[1:]:
    M=model_vis(name)
    print(name, 'closure phase chi2/N %.3f (N=%d), log closure amp chi2/N %.3f (N=%d)'%stats(M))
