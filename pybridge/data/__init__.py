"""The data layer: registering an AnnData, validating counts, and getting cells to the device.

``setup`` registers (``setup_anndata``) and ``registry`` records it; ``validation`` checks counts; ``fields``
reads the counts and covariate codes of chosen cells; ``stores`` (in memory), ``disk`` (on-disk .h5ad/zarr,
read through ``ondisk``) and ``minified`` (latent posteriors) serve minibatches, and ``factory.make_store`` picks one. ``datasets``
holds the bundled demo data, ``synthetic`` writes large simulated inputs.
"""
