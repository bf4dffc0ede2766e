//! Ratings: a Bayesian average for ordering, the plain average for display.
//!
//! score = (sum + C·m) / (count + C) with prior mean m = 3 stars and prior weight C = 5 ratings:
//! every template starts as if it had five 3-star ratings, so one 5-star rating (3.33) cannot
//! outrank 4.8 stars from 50 users (4.64). The prior is fixed rather than the site-wide mean so a
//! template's score depends only on its own ratings and can be stored and indexed.

/// Prior mean, in stars.
pub const PRIOR_MEAN: i64 = 3;
/// Prior weight, in ratings.
pub const PRIOR_WEIGHT: i64 = 5;
/// Scores are stored as integer micro-stars so sorting and cursors are exact on both databases.
pub const SCALE: i64 = 1_000_000;

pub const MIN_RATING: i64 = 1;
pub const MAX_RATING: i64 = 5;

/// Bayesian score in micro-stars (integer division, truncating).
pub fn bayesian_score(sum: i64, count: i64) -> i64 {
    (sum + PRIOR_WEIGHT * PRIOR_MEAN) * SCALE / (count + PRIOR_WEIGHT)
}

/// Plain average rounded to two decimals; 0 when unrated.
pub fn average(sum: i64, count: i64) -> f64 {
    if count <= 0 {
        return 0.0;
    }
    ((sum as f64 / count as f64) * 100.0).round() / 100.0
}

/// Checks a submitted rating.
pub fn check(rating: i64) -> Result<(), aragora_core::Error> {
    if (MIN_RATING..=MAX_RATING).contains(&rating) {
        Ok(())
    } else {
        Err(aragora_core::Error::invalid(
            "rating",
            format!("must be an integer from {MIN_RATING} to {MAX_RATING}, got {rating}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_five_star_rating_does_not_beat_many_good_ones() {
        let lone = bayesian_score(5, 1);
        let crowd = bayesian_score(240, 50); // 4.8 average
        assert!(crowd > lone, "{crowd} > {lone}");
        assert_eq!(lone, 3_333_333);
        assert_eq!(crowd, 4_636_363);
        assert_eq!(bayesian_score(0, 0), 3_000_000);
        // More evidence for the same average moves the score toward it.
        assert!(bayesian_score(45, 10) < bayesian_score(450, 100));
        assert!(bayesian_score(10, 10) > bayesian_score(100, 100));
    }

    #[test]
    fn average_and_range() {
        assert_eq!(average(13, 3), 4.33);
        assert_eq!(average(0, 0), 0.0);
        assert!(check(1).is_ok() && check(5).is_ok());
        assert!(check(0).is_err() && check(6).is_err());
    }
}
