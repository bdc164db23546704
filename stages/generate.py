"""Write the seeded synthetic dataset in PASCAL VOC layout."""

from pipeline import data_steps
from pipeline.runner import stage

main = stage(data_steps.generate)

if __name__ == "__main__":
    main()
