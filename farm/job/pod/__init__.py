"""The programs a Kubernetes pod's helper containers run around the job, in the target image's own Python.

Each is a module run with ``python -m`` (farm/backend/kubernetes/ builds the commands): ``budget`` wraps the job
and stops it at its budget, ``wait`` holds a container until the controller has done its part, ``receive`` unpacks
the inputs the controller streams in, ``send`` streams the results out. Standard library only: they run before the
job's own imports matter, and in every image.
"""
