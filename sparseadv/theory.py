# TEMPORARY stand-in until the data branch lands
import numpy as np
def default_threshold(m):
    return float(np.sqrt(0.4 * np.log(m)))
