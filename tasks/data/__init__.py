"""Stage `data`: `synth` (synthetic pedestrians in the CUHK-PEDES layout), `prepare` (a public
layout -> validated Parquet), the DATA format (`layout`) and its reader (`reader`)."""
