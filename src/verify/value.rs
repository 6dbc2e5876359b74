//! The value of a numeric answer: exact wherever the arithmetic allows (integers,
//! decimals, fractions, their products and powers, the roots of squares), an f64 only
//! for a root that has no exact form (`\sqrt{2}`) and what is computed from one. Such a
//! value is compared within the tolerance, never exactly.

use super::exact::{Decimal, Rational};

#[derive(Clone, Debug)]
pub enum Value {
    Exact(Rational),
    /// A finite f64: never infinity or NaN.
    Approximate(f64),
}

impl From<Decimal> for Value {
    fn from(decimal: Decimal) -> Self {
        Self::Exact(Rational::from(decimal))
    }
}

impl Value {
    /// An approximate value; None when it is not finite.
    fn approximate(value: f64) -> Option<Self> {
        value.is_finite().then_some(Self::Approximate(value))
    }

    /// The exact value, when there is one.
    pub fn exact(&self) -> Option<&Rational> {
        match self {
            Self::Exact(exact) => Some(exact),
            Self::Approximate(_) => None,
        }
    }

    /// The nearest f64; None for an exact value past the f64 range.
    pub fn to_f64(&self) -> Option<f64> {
        match self {
            Self::Exact(exact) => exact.to_f64(),
            Self::Approximate(value) => Some(*value),
        }
    }

    pub fn negated(&self) -> Self {
        match self {
            Self::Exact(exact) => Self::Exact(exact.negated()),
            Self::Approximate(value) => Self::Approximate(-value),
        }
    }

    /// The product; None when it is too long to compute exactly or overflows an f64.
    pub fn times(&self, other: &Self) -> Option<Self> {
        self.combine(other, Rational::times, |x, y| x * y)
    }

    /// `self / other`; None when `other` is zero.
    pub fn ratio(&self, other: &Self) -> Option<Self> {
        self.combine(other, Rational::ratio, |x, y| x / y)
    }

    /// `self^power`; None for zero to a negative power and for results too long to
    /// compute (`7^{100000}`) or past the f64 range when approximate.
    pub fn pow(&self, power: i32) -> Option<Self> {
        match self {
            Self::Exact(exact) => exact.pow(power).map(Self::Exact),
            Self::Approximate(value) => Self::approximate(value.powi(power)),
        }
    }

    /// The square root: exact for the square of a decimal or of a fraction of them,
    /// approximate otherwise; None for a negative value.
    pub fn sqrt(&self) -> Option<Self> {
        if let Some(root) = self.exact().and_then(Rational::exact_sqrt) {
            return Some(Self::Exact(root));
        }
        Self::approximate(self.to_f64()?.sqrt())
    }

    /// The value divided by 100: the fraction a percentage stands for.
    pub fn hundredth(&self) -> Option<Self> {
        match self {
            Self::Exact(exact) => exact.shifted(-2).map(Self::Exact),
            Self::Approximate(value) => Self::approximate(value / 100.0),
        }
    }

    /// Exact arithmetic when both values are exact, else the f64 one.
    fn combine(
        &self,
        other: &Self,
        exact: impl FnOnce(&Rational, &Rational) -> Option<Rational>,
        approximate: impl FnOnce(f64, f64) -> f64,
    ) -> Option<Self> {
        match (self, other) {
            (Self::Exact(x), Self::Exact(y)) => exact(x, y).map(Self::Exact),
            _ => Self::approximate(approximate(self.to_f64()?, other.to_f64()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(text: &str) -> Value {
        let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
        Value::from(Decimal::parse(integer, fraction, 0).unwrap())
    }

    #[test]
    fn roots_of_squares_stay_exact_and_others_are_approximate() {
        assert!(matches!(exact("16").sqrt(), Some(Value::Exact(_))));
        let root_two = exact("2").sqrt().unwrap();
        assert!(root_two.exact().is_none());
        assert_eq!(root_two.to_f64(), Some(std::f64::consts::SQRT_2));
        assert!(exact("4").negated().sqrt().is_none(), "no real root");
    }

    #[test]
    fn arithmetic_with_an_approximate_value_is_approximate() {
        let root_two = exact("2").sqrt().unwrap();
        let doubled = exact("2").times(&root_two).unwrap();
        assert_eq!(doubled.to_f64(), Some(2.0 * std::f64::consts::SQRT_2));
        assert!(root_two.ratio(&exact("0")).is_none());
        let big = Value::from(Decimal::parse("1", "", 300).unwrap());
        assert!(Value::Approximate(1e300).times(&big).is_none(), "overflows");
    }

    #[test]
    fn a_hundredth_is_exact_for_exact_values() {
        let quarter = exact("25").hundredth().unwrap();
        let expected = exact("0.25");
        assert_eq!(
            quarter
                .exact()
                .unwrap()
                .exactly_equals(expected.exact().unwrap()),
            Some(true)
        );
    }
}
