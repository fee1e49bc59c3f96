//! Who may do what where: a list of `{action, routes: [globs]}` grants. The same model serves
//! internal users (`[[user]] routes`), a JWT's permission claim and the API's scopes, so one
//! matcher decides them all.

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Watch a route (DESCRIBE, SETUP, PLAY, …).
    Read,
    /// Read the control API: routes, cameras and sessions of the granted routes.
    Api,
    /// Change through the control API: the granted routes, their sessions; with `"*"`,
    /// reloads too. Implies `api` on the same routes.
    ApiAdmin,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "read" => Some(Action::Read),
            "api" => Some(Action::Api),
            "api_admin" => Some(Action::ApiAdmin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Api => "api",
            Action::ApiAdmin => "api_admin",
        }
    }
}

/// One grant: `action` on every route path one of `routes` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub action: Action,
    pub routes: Vec<String>,
}

impl Permission {
    pub fn permits(&self, action: Action, route: &str) -> bool {
        self.action == action && self.routes.iter().any(|g| glob_matches(g, route))
    }
}

/// Whether any grant of `perms` allows `action` on `route`.
pub fn permits(perms: &[Permission], action: Action, route: &str) -> bool {
    perms.iter().any(|p| p.permits(action, route))
}

/// The API's one check: whether `perms` allow `action` on `route`, where a change grant
/// (`api_admin`) also lets its holder read the same routes.
pub fn may(perms: &[Permission], action: Action, route: &str) -> bool {
    permits(perms, action, route) || (action == Action::Api && permits(perms, Action::ApiAdmin, route))
}

/// Whether `perms` grant `action` on every route (a `"*"` glob): what a change that is not one
/// route's (a reload) needs.
pub fn may_everywhere(perms: &[Permission], action: Action) -> bool {
    perms.iter().any(|p| p.action == action && p.routes.iter().any(|g| g == "*"))
}

/// Whether `perms` hold any grant of `action` at all (the gate's first, route-less check).
pub fn has_any(perms: &[Permission], action: Action) -> bool {
    perms.iter().any(|p| p.action == action && !p.routes.is_empty())
        || (action == Action::Api && has_any(perms, Action::ApiAdmin))
}

/// Shell-style matching of a route path: `*` is any run of characters (slashes included, so
/// `/site-a/*` covers every camera under it), `?` one character; everything else is literal.
/// Iterative with one backtrack point, so a hostile pattern costs O(pattern × path).
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), path.chars().collect());
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs_match_route_paths() {
        for (g, path, want) in [
            ("/cam1", "/cam1", true),
            ("/cam1", "/cam10", false),
            ("/cam*", "/cam10", true),
            ("/site-a/*", "/site-a/door", true),
            ("/site-a/*", "/site-b/door", false),
            ("*", "/anything/at/all", true),
            ("/cam?", "/cam2", true),
            ("/cam?", "/cam22", false),
            ("", "/cam1", false),
            ("/a*b*c", "/axxbyyc", true),
            ("/a*b*c", "/axxbyy", false),
        ] {
            assert_eq!(glob_matches(g, path), want, "{g} vs {path}");
        }
    }

    #[test]
    fn grants_are_by_action_and_route() {
        let perms = vec![Permission { action: Action::Read, routes: vec!["/lobby/*".into(), "/door".into()] }];
        assert!(permits(&perms, Action::Read, "/lobby/1"));
        assert!(permits(&perms, Action::Read, "/door"));
        assert!(!permits(&perms, Action::Read, "/vault"));
        assert!(!permits(&perms, Action::Api, "/door"));
        assert!(!permits(&[], Action::Read, "/door"));
    }

    #[test]
    fn api_grants_read_change_and_everywhere() {
        let site1 = vec![Permission { action: Action::ApiAdmin, routes: vec!["/site1/*".into()] }];
        assert!(may(&site1, Action::Api, "/site1/cam1"));
        assert!(may(&site1, Action::ApiAdmin, "/site1/cam1"));
        assert!(!may(&site1, Action::Api, "/site2/cam1"));
        assert!(!may(&site1, Action::ApiAdmin, "/site2/cam1"));
        assert!(!may_everywhere(&site1, Action::ApiAdmin));
        assert!(has_any(&site1, Action::Api) && has_any(&site1, Action::ApiAdmin));
        let reader = vec![Permission { action: Action::Api, routes: vec!["*".into()] }];
        assert!(may(&reader, Action::Api, "/any"));
        assert!(!may(&reader, Action::ApiAdmin, "/any"));
        assert!(may_everywhere(&reader, Action::Api) && !may_everywhere(&reader, Action::ApiAdmin));
        assert!(!has_any(&reader, Action::ApiAdmin));
        assert!(!may(&[], Action::Api, "/any") && !has_any(&[], Action::Api));
        // A viewer's grant is not an API grant.
        let viewer = vec![Permission { action: Action::Read, routes: vec!["*".into()] }];
        assert!(!may(&viewer, Action::Api, "/any") && !has_any(&viewer, Action::Api));
    }

    proptest! {
        #[test]
        fn any_pattern_and_path_is_judged_without_panic(p in ".{0,40}", s in ".{0,40}") {
            let _ = glob_matches(&p, &s);
            prop_assert!(glob_matches("*", &s));
            prop_assert!(glob_matches(&s.replace(['*', '?'], "_"), &s.replace(['*', '?'], "_")));
        }
    }
}
