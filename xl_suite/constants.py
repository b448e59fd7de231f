"""Constants shared by the builders, cards and the evaluate metric."""

CITATION = """\
@inproceedings{iyer-etal-2025-xl,
    title = "{XL}-Suite: Cross-Lingual Synthetic Training and Evaluation Data for Open-Ended Generation",
    author = "Iyer, Vivek and Chen, Pinzhen and Rei, Ricardo and Birch, Alexandra",
    booktitle = "Findings of the Association for Computational Linguistics: EMNLP 2025",
    year = "2025",
    pages = "10418--10432",
    doi = "10.18653/v1/2025.findings-emnlp.550",
    eprint = "2503.22973",
    archivePrefix = "arXiv",
}
"""

PAPER_URL = "https://arxiv.org/abs/2503.22973"
#: Licenses of the releases: AlpacaEval data and the XL-/m-AlpacaEval benchmarks; the authors' XL-Instruct release.
LICENSE_BENCHMARK = "cc-by-nc-4.0"
LICENSE_INSTRUCT = "cc-by-sa-4.0"
