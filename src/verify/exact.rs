//! Exact numbers for comparing answers: decimals of any length and fractions of them.
//! An f64 turns `1e999` into infinity and a 10,000-digit number into a rounded one, so
//! answers are parsed into these and compared exactly before any tolerance applies.

use std::cmp::Ordering;

/// The most single-digit products one multiplication may take (about 10 ms): a longer
/// product is refused, and a number that needs it is not evaluated.
const MAX_MULTIPLY_WORK: usize = 10_000_000;
/// The most digits an addition may write out: aligning `1e1000000000` with `1/2` would
/// need a billion.
const MAX_ALIGNED_DIGITS: usize = 100_000;
/// The largest power-of-ten exponent kept; past it a number is not evaluated (and sums
/// of exponents cannot overflow).
const MAX_EXPONENT: i64 = 1_000_000_000_000;

/// The most digits whose square root is sought exactly: any 38-digit number fits a u128.
const MAX_ROOT_DIGITS: usize = 38;

/// `(-1)^negative × digits × 10^exponent`, written out exactly. `digits` (values 0–9,
/// most significant first) has no leading or trailing zeros, so equal values have equal
/// fields; zero has no digits and is not negative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// The canonical form of a value; None when its exponent is out of range.
    fn new(negative: bool, mut digits: Vec<u8>, exponent: i64) -> Option<Self> {
        let trailing = digits.iter().rev().take_while(|&&d| d == 0).count();
        digits.truncate(digits.len() - trailing);
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        let exponent = exponent.checked_add(i64::try_from(trailing).ok()?)?;
        if digits.is_empty() {
            return Some(Self::zero());
        }
        (exponent.abs() <= MAX_EXPONENT).then_some(Self {
            negative,
            digits,
            exponent,
        })
    }

    fn zero() -> Self {
        Self {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        }
    }

    fn one() -> Self {
        Self {
            negative: false,
            digits: vec![1],
            exponent: 0,
        }
    }

    /// `integer.fraction × 10^exponent` from ASCII digits (`,` separators in `integer`
    /// are skipped).
    pub fn parse(integer: &str, fraction: &str, exponent: i64) -> Option<Self> {
        let digits: Vec<u8> = integer
            .bytes()
            .filter(|&b| b != b',')
            .chain(fraction.bytes())
            .map(|b| b - b'0')
            .collect();
        let fraction_digits = i64::try_from(fraction.len()).ok()?;
        Self::new(false, digits, exponent.checked_sub(fraction_digits)?)
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the value is a power of ten (1, 10, 0.01…): its powers need no arithmetic.
    fn is_power_of_ten(&self) -> bool {
        !self.negative && self.digits == [1]
    }

    fn negated(&self) -> Self {
        Self {
            negative: !self.negative && !self.is_zero(),
            ..self.clone()
        }
    }

    /// The value times `10^by`.
    fn shifted(&self, by: i64) -> Option<Self> {
        Self::new(
            self.negative,
            self.digits.clone(),
            self.exponent.checked_add(by)?,
        )
    }

    /// The exact product; None when it would take more than [`MAX_MULTIPLY_WORK`].
    fn times(&self, other: &Self) -> Option<Self> {
        if self.digits.len().saturating_mul(other.digits.len()) > MAX_MULTIPLY_WORK {
            return None;
        }
        let digits = multiply_digits(&self.digits, &other.digits);
        Self::new(
            self.negative != other.negative,
            digits,
            self.exponent.checked_add(other.exponent)?,
        )
    }

    /// `self^power` by repeated squaring; a power of ten only moves its exponent.
    fn pow(&self, power: u32) -> Option<Self> {
        if self.is_power_of_ten() {
            return Self::one().shifted(self.exponent.checked_mul(i64::from(power))?);
        }
        let (mut result, mut base, mut power) = (Self::one(), self.clone(), power);
        while power > 0 {
            if power & 1 == 1 {
                result = result.times(&base)?;
            }
            power >>= 1;
            if power > 0 {
                base = base.times(&base)?;
            }
        }
        Some(result)
    }

    /// The exact square root of a value that is the square of a decimal (`2.25` → `1.5`,
    /// `10^{400}` → `10^{200}`); None for any other value, and for one of more than
    /// [`MAX_ROOT_DIGITS`] digits, whose root is not sought.
    fn exact_sqrt(&self) -> Option<Self> {
        if self.negative {
            return None;
        }
        let mut digits = self.digits.clone();
        let mut exponent = self.exponent;
        // An even power of ten halves exactly: 0.25 is 25 × 10^-2, 2.5 is 250 × 10^-2.
        if exponent % 2 != 0 {
            digits.push(0);
            exponent -= 1;
        }
        if digits.len() > MAX_ROOT_DIGITS {
            return None;
        }
        let square = digits.iter().fold(0u128, |n, &d| n * 10 + u128::from(d));
        let root = square.isqrt();
        if root * root != square {
            return None;
        }
        let root_digits = root.to_string().bytes().map(|b| b - b'0').collect();
        Self::new(false, root_digits, exponent / 2)
    }

    /// The exact sum of two values that are not negative; None when aligning their
    /// exponents would write more than [`MAX_ALIGNED_DIGITS`] digits.
    fn plus_non_negative(&self, other: &Self) -> Option<Self> {
        debug_assert!(!self.negative && !other.negative);
        let exponent = self.exponent.min(other.exponent);
        let a = self.aligned_to(exponent)?;
        let b = other.aligned_to(exponent)?;
        Self::new(false, add_digits(&a, &b), exponent)
    }

    /// The digits of the value written with `exponent` (not above its own).
    fn aligned_to(&self, exponent: i64) -> Option<Vec<u8>> {
        let zeros = usize::try_from(self.exponent - exponent).ok()?;
        if self.digits.len().saturating_add(zeros) > MAX_ALIGNED_DIGITS {
            return None;
        }
        let mut digits = self.digits.clone();
        digits.resize(self.digits.len() + zeros, 0);
        Some(digits)
    }

    /// The order of the absolute values.
    fn cmp_magnitude(&self, other: &Self) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        // Without leading zeros, the leading digit's place decides first; at the same
        // place the digits compare in order, a shorter run being followed by zeros.
        self.leading_place()
            .cmp(&other.leading_place())
            .then_with(|| self.digits.cmp(&other.digits))
    }

    /// The power of ten of the leading digit, plus one.
    fn leading_place(&self) -> i64 {
        self.exponent + self.digits.len() as i64
    }

    /// The nearest f64, infinite when the value is beyond the f64 range.
    fn to_f64(&self) -> f64 {
        if self.is_zero() {
            return 0.0;
        }
        if let Some(value) = self.short_to_f64() {
            return value;
        }
        let mut text = String::with_capacity(self.digits.len() + 24);
        if self.negative {
            text.push('-');
        }
        text.extend(self.digits.iter().map(|&d| char::from(b'0' + d)));
        text.push_str(&format!("e{}", self.exponent));
        // Rust's parser rounds correctly for any number of digits.
        text.parse().unwrap_or(f64::NAN)
    }

    /// Clinger's fast path, for the usual short answers: up to 15 digits and 10^22 are
    /// exact in an f64, so one multiplication or division rounds to the nearest f64.
    fn short_to_f64(&self) -> Option<f64> {
        let power = *EXACT_POWERS_OF_TEN.get(usize::try_from(self.exponent.abs()).ok()?)?;
        if self.digits.len() > 15 {
            return None;
        }
        let mantissa = self.digits.iter().fold(0u64, |m, &d| m * 10 + u64::from(d)) as f64;
        let magnitude = if self.exponent >= 0 {
            mantissa * power
        } else {
            mantissa / power
        };
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

/// 10^0 to 10^22, the powers of ten an f64 holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Schoolbook multiplication of digit runs (most significant first); column sums stay
/// far below u64's range for the lengths [`MAX_MULTIPLY_WORK`] allows.
fn multiply_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut columns = vec![0u64; a.len() + b.len()];
    for (i, &x) in a.iter().enumerate() {
        for (j, &y) in b.iter().enumerate() {
            columns[i + j + 1] += u64::from(x * y);
        }
    }
    let mut carry = 0;
    for column in columns.iter_mut().rev() {
        let total = *column + carry;
        *column = total % 10;
        carry = total / 10;
    }
    columns.into_iter().map(|d| d as u8).collect()
}

/// The sum of two digit runs of one exponent (most significant first).
fn add_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let length = a.len().max(b.len()) + 1;
    let digit = |run: &[u8], place: usize| run.len().checked_sub(place + 1).map_or(0, |i| run[i]);
    let mut sum = vec![0u8; length];
    let mut carry = 0;
    for place in 0..length {
        let total = digit(a, place) + digit(b, place) + carry;
        sum[length - 1 - place] = total % 10;
        carry = total / 10;
    }
    sum
}

/// An exact fraction of decimals, `numerator / denominator` with a positive denominator.
/// Not reduced (that needs division): equality cross-multiplies.
#[derive(Clone, Debug)]
pub struct Rational {
    numerator: Decimal,
    denominator: Decimal,
}

impl From<Decimal> for Rational {
    fn from(numerator: Decimal) -> Self {
        Self {
            numerator,
            denominator: Decimal::one(),
        }
    }
}

impl Rational {
    /// `numerator / denominator`; None when the denominator is zero or a product is too
    /// long to compute.
    pub fn ratio(numerator: &Self, denominator: &Self) -> Option<Self> {
        if denominator.numerator.is_zero() {
            return None;
        }
        let top = numerator.numerator.times(&denominator.denominator)?;
        let bottom = numerator.denominator.times(&denominator.numerator)?;
        Some(Self::signed(top, bottom))
    }

    /// The fraction with the sign moved into the numerator.
    fn signed(numerator: Decimal, denominator: Decimal) -> Self {
        if denominator.negative {
            Self {
                numerator: numerator.negated(),
                denominator: denominator.negated(),
            }
        } else {
            Self {
                numerator,
                denominator,
            }
        }
    }

    pub fn negated(&self) -> Self {
        Self {
            numerator: self.numerator.negated(),
            denominator: self.denominator.clone(),
        }
    }

    /// The value times `10^by`.
    pub fn shifted(&self, by: i64) -> Option<Self> {
        Some(Self {
            numerator: self.numerator.shifted(by)?,
            denominator: self.denominator.clone(),
        })
    }

    /// The exact product; None when it is too long to compute.
    pub fn times(&self, other: &Self) -> Option<Self> {
        Some(Self {
            numerator: self.numerator.times(&other.numerator)?,
            denominator: self.denominator.times(&other.denominator)?,
        })
    }

    /// The exact square root when the numerator and the denominator are squares of
    /// decimals (`\frac{9}{4}` → 1.5); None otherwise (the root of 2 has no exact form).
    pub fn exact_sqrt(&self) -> Option<Self> {
        Some(Self {
            numerator: self.numerator.exact_sqrt()?,
            denominator: self.denominator.exact_sqrt()?,
        })
    }

    /// `self^power`; None for zero to a negative power and for results too long to
    /// compute.
    pub fn pow(&self, power: i32) -> Option<Self> {
        let numerator = self.numerator.pow(power.unsigned_abs())?;
        let denominator = self.denominator.pow(power.unsigned_abs())?;
        if power >= 0 {
            Some(Self::signed(numerator, denominator))
        } else {
            (!numerator.is_zero()).then(|| Self::signed(denominator, numerator))
        }
    }

    /// Whether the value is a whole number written without a fraction: `5`, `2e3`, not
    /// `4/2`.
    pub fn is_whole(&self) -> bool {
        self.denominator == Decimal::one() && self.numerator.exponent >= 0
    }

    /// Whether the value lies strictly between 0 and 1.
    pub fn is_proper_fraction(&self) -> bool {
        !self.numerator.negative
            && !self.numerator.is_zero()
            && self.numerator.cmp_magnitude(&self.denominator) == Ordering::Less
    }

    /// The sum of two values that are not negative (a mixed number's parts).
    pub fn plus_non_negative(&self, other: &Self) -> Option<Self> {
        let left = self.numerator.times(&other.denominator)?;
        let right = other.numerator.times(&self.denominator)?;
        Some(Self {
            numerator: left.plus_non_negative(&right)?,
            denominator: self.denominator.times(&other.denominator)?,
        })
    }

    /// Whether the values are exactly equal; None when the cross products are too long
    /// to compute.
    pub fn exactly_equals(&self, other: &Self) -> Option<bool> {
        if self.denominator == other.denominator {
            return Some(self.numerator == other.numerator);
        }
        let left = self.numerator.times(&other.denominator)?;
        let right = other.numerator.times(&self.denominator)?;
        Some(left == right)
    }

    /// The nearest f64 when the numerator, the denominator and their quotient are all in
    /// the f64 range; None otherwise: a value an f64 cannot hold gets no tolerance.
    pub fn to_f64(&self) -> Option<f64> {
        let value = self.numerator.to_f64() / self.denominator.to_f64();
        value.is_finite().then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(text: &str) -> Decimal {
        let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
        Decimal::parse(integer, fraction, 0).unwrap()
    }

    fn number(text: &str) -> Rational {
        Rational::from(decimal(text))
    }

    #[test]
    fn canonical_form_drops_zeros() {
        assert_eq!(decimal("0012.500"), decimal("12.5"));
        assert_eq!(decimal("1,200"), Decimal::parse("12", "", 2).unwrap());
        assert_eq!(decimal("0.000"), Decimal::zero());
        assert_eq!(decimal("0").negated(), Decimal::zero());
    }

    #[test]
    fn products_sums_and_powers_are_exact() {
        assert_eq!(
            decimal("12.5").negated().times(&decimal("0.08")),
            Some(decimal("1").negated())
        );
        assert_eq!(
            decimal("99.9").plus_non_negative(&decimal("0.1")),
            Some(decimal("100"))
        );
        assert_eq!(
            decimal("2").pow(100),
            Some(decimal("1267650600228229401496703205376"))
        );
        assert_eq!(decimal("10").pow(400), Decimal::parse("1", "", 400));
        assert_eq!(decimal("7").pow(0), Some(Decimal::one()));
    }

    #[test]
    fn square_roots_are_exact_for_squares_only() {
        assert_eq!(decimal("16").exact_sqrt(), Some(decimal("4")));
        assert_eq!(decimal("2.25").exact_sqrt(), Some(decimal("1.5")));
        assert_eq!(decimal("0.025").exact_sqrt(), None);
        assert_eq!(decimal("0").exact_sqrt(), Some(Decimal::zero()));
        assert_eq!(
            Decimal::parse("1", "", 400).unwrap().exact_sqrt(),
            Decimal::parse("1", "", 200)
        );
        assert_eq!(decimal("2").exact_sqrt(), None);
        assert_eq!(decimal("4").negated().exact_sqrt(), None);
        let nine_quarters = Rational::ratio(&number("9"), &number("4")).unwrap();
        let root = nine_quarters.exact_sqrt().unwrap();
        assert_eq!(root.exactly_equals(&number("1.5")), Some(true));
    }

    #[test]
    fn fractions_multiply_exactly() {
        let half = Rational::ratio(&number("1"), &number("2")).unwrap();
        let product = half.times(&number("3").negated()).unwrap();
        assert_eq!(product.exactly_equals(&number("1.5").negated()), Some(true));
    }

    #[test]
    fn magnitudes_compare_by_place_then_digits() {
        assert_eq!(
            decimal("0.12").cmp_magnitude(&decimal("0.123")),
            Ordering::Less
        );
        assert_eq!(
            decimal("100").cmp_magnitude(&decimal("99.99")),
            Ordering::Greater
        );
        assert_eq!(
            decimal("0").cmp_magnitude(&decimal("0.001")),
            Ordering::Less
        );
    }

    #[test]
    fn fractions_compare_by_cross_products() {
        let third = Rational::ratio(&number("1"), &number("3")).unwrap();
        let two_sixths = Rational::ratio(&number("2"), &number("6")).unwrap();
        assert_eq!(third.exactly_equals(&two_sixths), Some(true));
        assert_eq!(third.exactly_equals(&number("0.333333")), Some(false));
        let minus_half = Rational::ratio(&number("1"), &number("2").negated()).unwrap();
        assert_eq!(
            minus_half.exactly_equals(&number("0.5").negated()),
            Some(true)
        );
        assert!(Rational::ratio(&number("1"), &number("0")).is_none());
    }

    #[test]
    fn oversized_work_is_refused_not_done() {
        let long = decimal(&"7".repeat(5_000));
        assert!(long.times(&long).is_none(), "25M digit products");
        assert!(decimal("3").pow(u32::MAX).is_none());
        assert!(Decimal::parse("1", "", MAX_EXPONENT + 1).is_none());
        let far = Decimal::parse("1", "", 1_000_000_000).unwrap();
        assert!(far.plus_non_negative(&decimal("0.5")).is_none());
    }

    #[test]
    fn short_values_convert_as_the_parser_does() {
        for text in [
            "0.1",
            "123456789012345",
            "1.5",
            "0.000000000000000000001",
            "98765.4321",
        ] {
            assert_eq!(
                decimal(text).to_f64(),
                text.parse::<f64>().unwrap(),
                "{text}"
            );
        }
        let long = "1234567890123456789.5";
        assert_eq!(decimal(long).to_f64(), long.parse::<f64>().unwrap());
    }

    #[test]
    fn values_beyond_f64_have_no_f64() {
        assert_eq!(number("0.75").to_f64(), Some(0.75));
        assert_eq!(
            Rational::from(Decimal::parse("1", "", 999).unwrap()).to_f64(),
            None
        );
        assert_eq!(
            Rational::from(Decimal::parse("1", "", -999).unwrap()).to_f64(),
            Some(0.0)
        );
    }
}
