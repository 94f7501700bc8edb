"""What users run on a tree or an installation beside compile and serve: `tyllm verify`
(verify.py), `tyllm doctor` (doctor.py), `tyllm prepare-smollm2` (smollm2.py), and the argparse
types the commands share (arg_types.py)."""
