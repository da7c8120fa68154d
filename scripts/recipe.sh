# Shared by measure_embedded.sh and validate_candidate.sh (sourced), so that validating a tune candidate and measuring
# the committed adapter select the direction and calibrate activation addition the same way.
# Direction selection: all 260 harmful_train prompts per class, candidate layers 6-23 (the last 20% are pruned
# anyway), harm-vs-refusal comparison at every third layer.
DIRECTION_ARGS=${DIRECTION_ARGS:---n-train 260 --layers 6-23}
HARM_ARGS=${HARM_ARGS:---harm-layers 2-23:3}
# Activation-addition coefficients tried on 100 harmless_val prompts (`refusal-sae calibrate-actadd`); the smallest
# reaching 90% refusal is used.
ACTADD_COEFFS=${ACTADD_COEFFS:-1,1.25,1.5,2}
