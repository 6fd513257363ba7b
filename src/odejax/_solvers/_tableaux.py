"""Butcher tableaux of the explicit Runge-Kutta methods shipped with odejax.

Conventions follow `ButcherTableau`: `b_error = b - b_embedded`, and `b_dense[i, m]`
is the coefficient of `theta^(m + 1)` in the continuous weight `b_i(theta)`.
Rational coefficients are written as fractions; the rest are decimal expansions of
the published values (more digits than float64 keeps, which is harmless).
"""

from __future__ import annotations

import numpy as np

from ._tableau import ButcherTableau


def _fsal(rows, b):
    """The stage matrix `rows` with one more row, `b` itself, as its final stage.

    Reusing the very same floats makes the FSAL property exact, as
    `ButcherTableau.fsal` requires.
    """
    return [*rows, list(b[:-1])]


# ---- first and second order ---------------------------------------------------------

# L. Euler, "Institutionum calculi integralis", vol. 1, St. Petersburg, 1768.
EULER = ButcherTableau(a=[[0.0]], b=[1.0], c=[0.0], order=1)

# K. Heun, "Neue Methode zur approximativen Integration der Differentialgleichungen
# einer unabhängigen Veränderlichen", Z. Math. Phys. 45 (1900) 23-38.
# Embedded method: explicit Euler, b_embedded = [1, 0].
HEUN = ButcherTableau(
    a=[[], [1.0]],
    b=[1 / 2, 1 / 2],
    c=[0.0, 1.0],
    order=2,
    b_error=[1 / 2 - 1, 1 / 2],
    embedded_order=1,
)

# C. Runge, "Über die numerische Auflösung von Differentialgleichungen",
# Math. Ann. 46 (1895) 167-178. Embedded method: explicit Euler.
MIDPOINT = ButcherTableau(
    a=[[], [1 / 2]],
    b=[0.0, 1.0],
    c=[0.0, 1 / 2],
    order=2,
    b_error=[0.0 - 1, 1.0],
    embedded_order=1,
)

# A. Ralston, "Runge-Kutta methods with minimum error bounds",
# Math. Comp. 16 (1962) 431-437. Embedded method: explicit Euler.
RALSTON = ButcherTableau(
    a=[[], [2 / 3]],
    b=[1 / 4, 3 / 4],
    c=[0.0, 2 / 3],
    order=2,
    b_error=[1 / 4 - 1, 3 / 4],
    embedded_order=1,
)

# ---- Bogacki-Shampine 3(2) ----------------------------------------------------------

# P. Bogacki and L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas",
# Appl. Math. Lett. 2(4) (1989) 321-325. FSAL; no own interpolant (odejax falls back to
# cubic Hermite interpolation, which is third order).
_bosh3_b = np.array([2 / 9, 1 / 3, 4 / 9, 0.0])
_bosh3_b_embedded = np.array([7 / 24, 1 / 4, 1 / 3, 1 / 8])
BOSH3 = ButcherTableau(
    a=_fsal([[], [1 / 2], [0.0, 3 / 4]], _bosh3_b),
    b=_bosh3_b,
    c=[0.0, 1 / 2, 3 / 4, 1.0],
    order=3,
    b_error=_bosh3_b - _bosh3_b_embedded,
    embedded_order=2,
)

# ---- Tsitouras 5(4) -----------------------------------------------------------------

# Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first column
# simplifying assumption", Comput. Math. Appl. 62(2) (2011) 770-775.
# The continuous extension (order 4) is the one given in the same paper.
_tsit5_b = np.array(
    [
        0.096460766818065229518,
        1 / 100,
        0.47988965041449957478,
        1.3790085741037418932,
        -3.2900695154360806799,
        2.3247105240997739824,
        0.0,
    ]
)
_tsit5_b_embedded = np.array(
    [
        0.094680755765839458075,
        0.0091835655403432530968,
        0.48777052842476157079,
        1.2342975669304789857,
        -2.7077123499835254549,
        1.8666284181705870358,
        1 / 66,
    ]
)
_tsit5_rows = [
    [],
    [161 / 1000],
    [-0.0084806554923569885444, 0.33548065549235698854],
    [2.8971530571054934321, -6.3594484899750748431, 4.3622954328695814110],
    [
        5.3258648284392566044,
        -11.748883564062827878,
        7.4955393428898362083,
        -0.092495066361755249257,
    ],
    [
        5.8614554429464200287,
        -12.920969317847109292,
        8.1593678985761586432,
        -0.071584973281400997225,
        -0.028269050394068382909,
    ],
]
# Columns: theta, theta^2, theta^3, theta^4 (the paper's polynomials, expanded).
_tsit5_b_dense = np.array(
    [
        [1.0, -2.7637061972748259, 2.9132554618219127, -1.0530884977290216],
        [0.0, 0.1317, -0.2234, 0.1017],
        [0.0, 3.9302962368947515, -5.9410338721315047, 2.4906272856512528],
        [0.0, -12.411077166933677, 30.338188630282322, -16.548102889244903],
        [0.0, 37.509313416511039, -88.178904894766401, 47.379521962819281],
        [0.0, -27.896526289197288, 65.091894674793672, -34.870657861496610],
        [0.0, 3 / 2, -4.0, 5 / 2],
    ]
)
TSIT5 = ButcherTableau(
    a=_fsal(_tsit5_rows, _tsit5_b),
    b=_tsit5_b,
    c=[0.0, 161 / 1000, 327 / 1000, 9 / 10, 0.98002554090450968573, 1.0, 1.0],
    order=5,
    b_error=_tsit5_b - _tsit5_b_embedded,
    embedded_order=4,
    b_dense=_tsit5_b_dense,
    dense_order=4,
)

# ---- Dormand-Prince 5(4) ------------------------------------------------------------

# J. R. Dormand and P. J. Prince, "A family of embedded Runge-Kutta formulae",
# J. Comput. Appl. Math. 6(1) (1980) 19-26 (stages and fifth-order weights of RK5(4)7M).
# The fourth-order embedded weights are Shampine's, from L. F. Shampine, "Some practical
# Runge-Kutta formulas", Math. Comp. 46(173) (1986) 135-150, as diffrax uses them. (The
# original 1980 pair, used by Hairer's DOPRI5 code, embeds [5179/57600, 0, 7571/16695,
# 393/640, -92097/339200, 187/2100, 1/40] instead; both are fourth order.)
_dopri5_b = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
_dopri5_b_embedded = np.array(
    [1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60]
)
_dopri5_rows = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
]


def _quartic_dense(b, b_mid):
    """`b_dense` of the quartic through y0, y1, h f0, h f1 (f0 = k_0, f1 = k_last) and
    y(1/2) = y0 + h sum_i b_mid_i k_i.

    With D1 = (y1 - y0)/h = b.k and Dm = (y(1/2) - y0)/h = b_mid.k, solving the five
    interpolation conditions for p(theta) = y0 + h sum_{m=1..4} q_m theta^m gives
        q1 = f0
        q2 = -4 f0 +   f1 -  5 D1 + 16 Dm
        q3 =  5 f0 - 3 f1 + 14 D1 - 32 Dm
        q4 = -2 f0 + 2 f1 -  8 D1 + 16 Dm
    and each q_m is linear in the stages.
    """
    e0 = np.zeros_like(b)
    e0[0] = 1.0
    e1 = np.zeros_like(b)
    e1[-1] = 1.0
    q2 = -4 * e0 + e1 - 5 * b + 16 * b_mid
    q3 = 5 * e0 - 3 * e1 + 14 * b - 32 * b_mid
    q4 = -2 * e0 + 2 * e1 - 8 * b + 16 * b_mid
    return np.stack([e0, q2, q3, q4], axis=1)


# Weights of the fourth-order approximation to y(t0 + h/2) from Shampine (1986, above),
# tabulated there per half step (y(t0 + h/2) = y0 + (h/2) sum_i w_i k_i), hence the
# division by 2. The resulting quartic is the dense output of Hairer's DOPRI5 code
# (E. Hairer, S. P. Norsett, G. Wanner, "Solving Ordinary Differential Equations I",
# 2nd ed., Springer, 1993, Section II.6).
_dopri5_b_mid = (
    np.array(
        [
            6025192743 / 30085553152,
            0.0,
            51252292925 / 65400821598,
            -2691868925 / 45128329728,
            187940372067 / 1594534317056,
            -1776094331 / 19743644256,
            11237099 / 235043384,
        ]
    )
    / 2
)
DOPRI5 = ButcherTableau(
    a=_fsal(_dopri5_rows, _dopri5_b),
    b=_dopri5_b,
    c=[0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0],
    order=5,
    b_error=_dopri5_b - _dopri5_b_embedded,
    embedded_order=4,
    b_dense=_quartic_dense(_dopri5_b, _dopri5_b_mid),
    dense_order=4,
)

# ---- Dormand-Prince 8(7) ------------------------------------------------------------

# fmt: off

# P. J. Prince and J. R. Dormand, "High order embedded Runge-Kutta formulae",
# J. Comput. Appl. Math. 7(1) (1981) 67-75 (the pair RK8(7)13M), with a 14th FSAL
# stage appended so that f(t1, y1) is available for the next step.
_dopri8_b = np.array(
    [
        14005451 / 335480064, 0.0, 0.0, 0.0, 0.0,
        -59238493 / 1068277825, 181606767 / 758867731, 561292985 / 797845732,
        -1041891430 / 1371343529, 760417239 / 1151165299, 118820643 / 751138087,
        -528747749 / 2220607170, 1 / 4, 0.0,
    ]
)
_dopri8_b_embedded = np.array(
    [
        13451932 / 455176623, 0.0, 0.0, 0.0, 0.0,
        -808719846 / 976000145, 1757004468 / 5645159321, 656045339 / 265891186,
        -3867574721 / 1518517206, 465885868 / 322736535, 53011238 / 667516719,
        2 / 45, 0.0, 0.0,
    ]
)
_dopri8_rows = [
    [],
    [1 / 18],
    [1 / 48, 1 / 16],
    [1 / 32, 0.0, 3 / 32],
    [5 / 16, 0.0, -75 / 64, 75 / 64],
    [3 / 80, 0.0, 0.0, 3 / 16, 3 / 20],
    [29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000,
     23124283 / 1800000000],
    [16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777,
     545815736 / 2771057229, -180193667 / 1043307555],
    [39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301,
     100302831 / 723423059, 790204164 / 839813087, 800635310 / 3783071287],
    [246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246,
     -309121744 / 1061227803, -12992083 / 490766935, 6005943493 / 2108947869,
     393006217 / 1396673457, 123872331 / 1001029789],
    [-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
     -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
     -45442868181 / 3398467696, 3065993473 / 597172653],
    [185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
     -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563,
     -4093664535 / 808688257, 3962137247 / 1805957418, 65686358 / 487910083],
    [403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805,
     652783627 / 914296604, 11173962825 / 925320556, -13158990841 / 6184727034,
     3936647629 / 1978049680, -160528059 / 685178525, 248638103 / 1413531060, 0.0],
]
# Continuous extension: the one diffrax ships for this pair, which it attributes to
# P. Bogacki and L. F. Shampine, "Interpolating high-order Runge-Kutta formulas",
# Comput. Math. Appl. 20(3) (1990) 15-24. It uses only the 14 stages above and is a
# sextic in theta, but it satisfies the continuous order conditions only up to order 5
# (checked against every rooted tree, and by its local error), hence dense_order=5.
# Columns: theta, theta^2, ..., theta^6.
_dopri8_b_dense = np.array(
    [
        [1.0, -6.6910181737837595697, 19.9990069333683970610, -30.0610568289666450593,
         22.1396504998094068976, -6.3448349392860401388],
        [0.0] * 6,
        [0.0] * 6,
        [0.0] * 6,
        [0.0] * 6,
        [0.0, -7.6142658045872677172, 52.2273532792945524050, -121.4999627731334642623,
         116.4422149550342161651, -39.6107919852202505218],
        [0.0, 10.7281392630428866124, -46.8919164181093621583, 83.1721004639847717481,
         -67.1451318825957197185, 20.3761213808791436958],
        [0.0, 0.5526637063753648783, -0.1890893225010595467, 9.5724507555993664382,
         -16.5672243527496524646, 7.3347098826795362023],
        [0.0, 4.2186562625665153803, -35.7075975946222072821, 87.8406057677205645007,
         -89.9916014847245016028, 32.8801774352459155182],
        [0.0, -0.6627209125361597559, 6.2736448083240352160, -17.4152107770762969005,
         22.6237489648532849093, -10.1588990526426760954],
        [0.0, -1.2636789001135462218, 10.3160881272450748458, -28.5903289514790976966,
         32.2362340167355370113, -12.5401268098782561200],
        [0.0, 5.4106037898590422230, -34.7650769866611817349, 81.6630950584341412934,
         -82.1020315488359848644, 29.5553001484516038033],
        [0.0, -7.0321379067945741781, 47.7457971078225540396, -114.9375291377009418170,
         116.2662185791119533462, -41.7923486424390588923],
        [0.0, 2.3537586759714983486, -19.0082099341608028453, 50.2558364226176017553,
         -53.9020777466385396792, 20.3006925822100825485],
    ]
)
# These tabulated coefficients reproduce `b` at theta = 1 only to ~1e-12 per stage;
# absorb that residue into the theta^6 column so that the interpolant ends exactly at
# y1 (this changes b_i(theta) by at most ~1e-12 and does not affect its order).
_dopri8_b_dense[:, -1] += _dopri8_b - _dopri8_b_dense.sum(axis=1)
DOPRI8 = ButcherTableau(
    a=_fsal(_dopri8_rows, _dopri8_b),
    b=_dopri8_b,
    c=[
        0.0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200,
        5490023248 / 9719169821, 13 / 20, 1201146811 / 1299019798, 1.0, 1.0, 1.0,
    ],
    order=8,
    b_error=_dopri8_b - _dopri8_b_embedded,
    embedded_order=7,
    b_dense=_dopri8_b_dense,
    dense_order=5,
)
# fmt: on
