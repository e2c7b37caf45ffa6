import numpy as np
from tumorgen.api import TumorGen
from tumorgen.data.box_geometry import tight_box
from tumorgen.data.erase import erase_box
from tumorgen.data.prepared import load_prepared
ds = load_prepared("/tmp/tg/prep_val")
tg = TumorGen.load("/tmp/tg2/v_up", device="cpu")
for case in ds.split("test"):
    im, m, aff = case.load(); suv = im * ds.suv_max
    box = tight_box(m, margin=2)
    er = erase_box(suv, box, rng=np.random.default_rng(0))
    real = suv[m > 0].mean()
    row = [case.name, f"real {real:.2f} vol {int((m>0).sum())}"]
    for feather in (3, 0):
        for told in (True, False):
            r = tg.synthesize(er, affine=aff, box=box, steps=10, seed=1, feather=feather, suv_mean=float(real) if told else None)[0]
            mk = r.mask > 0
            row.append(f"f{feather}{'T' if told else 'D'} {r.image[mk].mean():.2f}/{int(mk.sum())}")
    print(" | ".join(row), flush=True)
