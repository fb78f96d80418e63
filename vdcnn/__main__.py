"""``python -m vdcnn ...`` (and ``torchrun ... -m vdcnn train ...``): the ``vdcnn`` command."""

from vdcnn.cli.main import main

if __name__ == "__main__":
    main()
