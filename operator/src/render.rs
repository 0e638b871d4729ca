//! `kumiko-operator render`: prints, offline, every object a KumikoApp produces.
//!
//! The manifest is checked as the API server would check it (the CRD's structural schema and its
//! CEL rules), then it is validated as the controller validates it ([`ValidatedApp`]) and
//! [`crate::desired::children`] builds the children, exactly as the controller's plan does. The
//! list of children is taken apart without `..` here as in the executor, so a child that is
//! applied but not rendered does not compile.

use std::io::{Read, Write};
use std::path::Path;

use kumiko_crds::KumikoApp;
use serde::Serialize;

use crate::Error;
use crate::cli::RenderArgs;
use crate::desired::{Children, NetworkPolicies, ProcessObjects, Route, children};
use crate::observed::Observed;
use crate::validate::ValidatedApp;

/// Runs `render`: reads, validates, builds and prints.
pub fn run(args: &RenderArgs) -> Result<(), Error> {
    let manifest = read_input(&args.file)?;
    let app = parse_app(&args.file, &manifest)?;
    let observed = match &args.observed {
        Some(path) => parse_observed(path, &read_input(path)?)?,
        None => Observed::default_for_render(),
    };
    let output = render(&app, &observed, args.rolled_out)?;
    std::io::stdout()
        .write_all(output.as_bytes())
        .map_err(Error::Stdout)
}

fn read_input(path: &Path) -> Result<String, Error> {
    let read_error = |source| Error::ReadFile {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(read_error)
    }
}

/// Parses and validates a KumikoApp manifest: YAML syntax, then every rule of the CRD (all problems
/// at once), then the typed form.
pub fn parse_app(path: &Path, manifest: &str) -> Result<KumikoApp, Error> {
    let invalid = |message: String| Error::InvalidManifest {
        path: path.to_owned(),
        message,
    };
    let value: serde_json::Value =
        serde_saphyr::from_str(manifest).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if kind != "KumikoApp" || api_version != "kumiko.so/v1alpha1" {
        return Err(invalid(format!(
            "expected apiVersion kumiko.so/v1alpha1 and kind KumikoApp, found apiVersion {api_version:?} and kind {kind:?}"
        )));
    }
    let value = crate::validation::validate_app(&value).map_err(|problems| Error::InvalidApp {
        path: path.to_owned(),
        problems,
    })?;
    let app: KumikoApp = serde_json::from_value(value).map_err(|e| invalid(format!("{e}")))?;
    ValidatedApp::new(&app).map_err(|invalid| Error::InvalidApp {
        path: path.to_owned(),
        problems: vec![invalid.message],
    })?;
    Ok(app)
}

fn parse_observed(path: &Path, text: &str) -> Result<Observed, Error> {
    serde_saphyr::from_str(text).map_err(|e| Error::InvalidManifest {
        path: path.to_owned(),
        message: format!(
            "not an observed state (fields: databaseReady, rolesReady, migratedImage, runningImage, credentialsChecksum, appUid): {e}"
        ),
    })
}

fn document(out: &mut String, object: &impl Serialize) -> Result<(), Error> {
    out.push_str("---\n");
    out.push_str(&serde_saphyr::to_string(object).map_err(Error::SerializeYaml)?);
    Ok(())
}

fn describe(observed: &Observed, image: &str) -> String {
    let migrated = match &observed.migrated_image {
        Some(migrated) if migrated == image => format!("{image} is migrated"),
        Some(migrated) => format!("{migrated} is migrated, {image} is not yet"),
        None => format!("{image} is not yet migrated"),
    };
    format!(
        "# Observed: database {}, roles {}, {migrated}.\n",
        if observed.database_ready {
            "ready"
        } else {
            "not ready"
        },
        if observed.roles_ready {
            "ready"
        } else {
            "not ready"
        },
    )
}

/// The multi-document YAML of every desired object, with comments that say what follows.
pub fn render(app: &KumikoApp, observed: &Observed, rolled_out: bool) -> Result<String, Error> {
    let name = app.metadata.name.clone().unwrap_or_default();
    let mut out = format!(
        "# Rendered by kumiko-operator for KumikoApp {name}: exactly the objects the controller applies.\n"
    );
    out.push_str(&describe(observed, &app.spec.image));
    out.push_str(&format!(
        "# Not shown: the Secrets {} and {} (credentials the controller writes after creating the roles).\n",
        kumiko_crds::names::owner_secret(&name),
        kumiko_crds::names::runtime_secret(&name),
    ));
    let validated = ValidatedApp::new(app).map_err(|invalid| Error::InvalidApp {
        path: "<the KumikoApp>".into(),
        problems: vec![invalid.message],
    })?;
    let now = children(&validated, observed);
    out.push_str(&documents(&now)?);

    if now.migrate_job.is_some() {
        let after = Observed {
            migrated_image: Some(app.spec.image.clone()),
            running_image: Some(app.spec.image.clone()),
            ..observed.clone()
        };
        let rolled = children(&validated, &after);
        let mut follows = Vec::new();
        for process in [&rolled.api, &rolled.worker].into_iter().flatten() {
            follows.push(format!(
                "Deployment {}",
                process.deployment.metadata.name.clone().unwrap_or_default()
            ));
        }
        match &rolled.route {
            None => {}
            Some(Route::Ingress(ingress)) => follows.push(format!(
                "Ingress {}",
                ingress.metadata.name.clone().unwrap_or_default()
            )),
            Some(Route::Gateway { route, .. }) => follows.push(format!(
                "HTTPRoute {}",
                route.metadata.name.clone().unwrap_or_default()
            )),
        }
        if let Some(pod_monitor) = &rolled.pod_monitor {
            follows.push(format!(
                "PodMonitor {}",
                pod_monitor.metadata.name.clone().unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "# Once the migrate Job succeeds, the operator rolls out {} at image {}.\n",
            follows.join(" and "),
            app.spec.image
        ));
        if rolled_out {
            out.push_str("# The rolled-out state (--rolled-out):\n");
            for process in [&rolled.api, &rolled.worker].into_iter().flatten() {
                print_process(&mut out, process)?;
            }
            print_route(&mut out, rolled.route.as_ref())?;
            if let Some(pod_monitor) = &rolled.pod_monitor {
                document(&mut out, pod_monitor)?;
            }
        } else {
            out.push_str("# Run with --rolled-out to print them.\n");
        }
    }
    Ok(out)
}

/// The YAML documents of `children`, in the order the controller applies them.
pub fn documents(children: &Children) -> Result<String, Error> {
    let mut out = String::new();
    let out = &mut out;
    let Children {
        service_account,
        resource_quota,
        limit_range,
        network_policies,
        database_cluster,
        migrate_job,
        api,
        worker,
        route,
        pod_monitor,
    } = children;
    document(out, service_account)?;
    document(out, resource_quota)?;
    document(out, limit_range)?;
    if let Some(NetworkPolicies {
        api,
        no_ingress,
        database,
        egress,
    }) = network_policies
    {
        for policy in [
            Some(api),
            Some(no_ingress),
            database.as_ref(),
            egress.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            document(out, policy)?;
        }
    }
    if let Some(cluster) = database_cluster {
        document(out, cluster)?;
    }
    if let Some(job) = migrate_job {
        document(out, job)?;
    }
    for process in [api, worker].into_iter().flatten() {
        print_process(out, process)?;
    }
    print_route(out, route.as_ref())?;
    if let Some(pod_monitor) = pod_monitor {
        document(out, pod_monitor)?;
    }
    Ok(std::mem::take(out))
}

fn print_route(out: &mut String, route: Option<&Route>) -> Result<(), Error> {
    match route {
        None => Ok(()),
        Some(Route::Ingress(ingress)) => document(out, ingress.as_ref()),
        Some(Route::Gateway { route, certificate }) => {
            if let Some(certificate) = certificate {
                document(out, certificate.as_ref())?;
            }
            document(out, route.as_ref())
        }
    }
}

fn print_process(out: &mut String, process: &ProcessObjects) -> Result<(), Error> {
    let ProcessObjects {
        deployment,
        service,
        pod_disruption_budget,
        horizontal_pod_autoscaler,
    } = process;
    document(out, deployment)?;
    if let Some(service) = service {
        document(out, service)?;
    }
    document(out, pod_disruption_budget)?;
    if let Some(autoscaler) = horizontal_pod_autoscaler {
        document(out, autoscaler)?;
    }
    Ok(())
}
