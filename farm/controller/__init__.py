"""What the commands do, over the layers below: the fleet this host sees, staging a job and running it in each target
(matrix, tune), collecting the report; doctor and clean."""
