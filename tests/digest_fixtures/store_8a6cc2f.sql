BEGIN TRANSACTION;
CREATE TABLE function_chunk_seconds (
    sample_key TEXT NOT NULL, first_seed INTEGER NOT NULL, networks INTEGER NOT NULL,
    seconds REAL NOT NULL, PRIMARY KEY (sample_key, first_seed, networks));
CREATE TABLE function_experiments (
    spec_hash TEXT PRIMARY KEY, info_json TEXT NOT NULL, finished_at TEXT NOT NULL);
CREATE TABLE function_priors (
    volume_key TEXT PRIMARY KEY, kernel TEXT NOT NULL, log10_v_train REAL,
    prior_label1_json TEXT NOT NULL);
CREATE TABLE function_samples (
    sample_key TEXT NOT NULL, seed INTEGER NOT NULL, epochs INTEGER NOT NULL,
    fitted INTEGER NOT NULL, labels_E TEXT NOT NULL, PRIMARY KEY (sample_key, seed));
CREATE TABLE function_volumes (
    volume_key TEXT NOT NULL, function TEXT NOT NULL, log10_v_full REAL,
    converged INTEGER NOT NULL, PRIMARY KEY (volume_key, function));
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "meta" VALUES('schema_version','1');
INSERT INTO "meta" VALUES('flatvol_version','0.1.0');
INSERT INTO "meta" VALUES('torch_version','2.13.0+cpu');
INSERT INTO "meta" VALUES('numpy_version','2.4.6');
INSERT INTO "meta" VALUES('python_version','3.11.7');
INSERT INTO "meta" VALUES('platform','Linux-6.18.44-fc-v1300-x86_64-with-glibc2.36');
CREATE TABLE results (
    spec_hash   TEXT NOT NULL,
    optimizer   TEXT NOT NULL,
    attack_size INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    name        TEXT NOT NULL,
    value       REAL,
    PRIMARY KEY (spec_hash, optimizer, attack_size, seed, name)
);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'log10_volume',-1.52798709519584772209e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'log10_volume_S',-1.02426147599628087898e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'log10_volume_conditional',-5.03725619199566843064e+00);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'log10_volume_conditional_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'log10_volume_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'pac_bayes_bound',6.52761617979568331548e-01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'test_acc_E',6.33333333333333303727e-01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'train_acc_A',NULL);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'train_acc_S',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,0,'volume_converged',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'log10_volume',-1.66157041018471680611e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'log10_volume_S',-1.02426147599628087898e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'log10_volume_conditional',-6.37308934188435927126e+00);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'log10_volume_conditional_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'log10_volume_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'pac_bayes_bound',6.52761617979568331548e-01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'test_acc_E',5.66666666666666651863e-01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'train_acc_A',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'train_acc_S',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,0,'volume_converged',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'log10_volume',-1.57705325655530117501e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'log10_volume_S',-1.02426147599628087898e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'log10_volume_conditional',-5.52791780559020295982e+00);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'log10_volume_conditional_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'log10_volume_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'pac_bayes_bound',6.52761617979568331548e-01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'test_acc_E',5.33333333333333325931e-01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'train_acc_A',NULL);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'train_acc_S',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',0,1,'volume_converged',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'log10_volume',-1.71904714137613545688e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'log10_volume_S',-1.02426147599628087898e+01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'log10_volume_conditional',-6.94785665379854577849e+00);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'log10_volume_conditional_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'log10_volume_stderr',0.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'pac_bayes_bound',6.52761617979568331548e-01);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'test_acc_E',0.5);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'train_acc_A',0.9);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'train_acc_S',1.0);
INSERT INTO "results" VALUES('04348e91c6a81851','sgd',10,1,'volume_converged',1.0);
CREATE TABLE runs (
    spec_hash        TEXT NOT NULL,
    optimizer        TEXT NOT NULL,
    attack_size      INTEGER NOT NULL,
    seed             INTEGER NOT NULL,
    config_hash      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    reason           TEXT,
    volume_estimator TEXT,
    info_json        TEXT NOT NULL,
    seconds          REAL NOT NULL,
    finished_at      TEXT NOT NULL,
    PRIMARY KEY (spec_hash, optimizer, attack_size, seed)
);
INSERT INTO "runs" VALUES('04348e91c6a81851','sgd',0,0,'aa62566399d15ea8','done',NULL,'ep-orthant','{"alpha_events": [], "attack_size": 0, "batch_size": 32, "classes": "0-4v5-9", "data_seed": 0, "device": "cpu", "epochs": 52, "fitted_at": 52, "flatvol_version": "0.1.0", "last_iterate": {"test_acc_E": 0.6333333333333333, "train_acc_A": null, "train_acc_S": 1.0}, "lr": 0.05, "measured_model": "final", "measures": {"accuracy": {"seconds": 0.0002}, "volume": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "kernel": {"cache_key": "9375527d38e369fc", "kind": "analytic", "n": 60, "seconds": 0.001}, "log10_volume": -15.279870951958477, "log_marginal_likelihood_nats": -35.18320307685233, "message": "", "n": 60, "n_samples": null, "proposal": null, "seconds": 0.0269, "stderr_log10": null, "train": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "log10_volume": -10.242614759962809, "log_marginal_likelihood_nats": -23.58449205957115, "message": "", "n": 30, "n_samples": null, "proposal": null, "seconds": 0.008400483000514214, "stderr_log10": null}}}, "model": "fcn:8", "optimizer_label": "sgd", "optimizer_name": "sgd", "optimizer_options": {}, "prior": {"sigma_b2": 1.0, "sigma_w2": 2.0}, "seconds": 0.061, "seed": 0, "task": "mnist", "test_size": 30, "torch_version": "2.13.0+cpu", "train": {"batch_size": 32, "fit": "S", "lr": 0.05, "max_epochs": 300, "momentum": 0.9, "optimizer": "sgd", "post_train_epochs": 0, "weight_decay": 0.0}, "train_size": 30, "train_status": "fitted"}',6.14809380003862315788e-02,'2026-12-07T05:46:11+00:00');
INSERT INTO "runs" VALUES('04348e91c6a81851','sgd',10,0,'aa62566399d15ea8','done',NULL,'ep-orthant','{"alpha_events": [], "attack_size": 10, "batch_size": 32, "classes": "0-4v5-9", "data_seed": 0, "device": "cpu", "epochs": 32, "fitted_at": 32, "flatvol_version": "0.1.0", "last_iterate": {"test_acc_E": 0.5666666666666667, "train_acc_A": 1.0, "train_acc_S": 1.0}, "lr": 0.05, "measured_model": "final", "measures": {"accuracy": {"seconds": 0.0002}, "volume": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "kernel": {"cache_key": "9375527d38e369fc", "kind": "analytic", "n": 60, "seconds": 0.001}, "log10_volume": -16.615704101847168, "log_marginal_likelihood_nats": -38.25907257451331, "message": "", "n": 60, "n_samples": null, "proposal": null, "seconds": 0.0075, "stderr_log10": null, "train": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "log10_volume": -10.242614759962809, "log_marginal_likelihood_nats": -23.58449205957115, "message": "", "n": 30, "n_samples": null, "proposal": null, "seconds": 0.008400483000514214, "stderr_log10": null}}}, "model": "fcn:8", "optimizer_label": "sgd", "optimizer_name": "sgd", "optimizer_options": {}, "prior": {"sigma_b2": 1.0, "sigma_w2": 2.0}, "seconds": 0.04, "seed": 0, "task": "mnist", "test_size": 30, "torch_version": "2.13.0+cpu", "train": {"batch_size": 32, "fit": "S", "lr": 0.05, "max_epochs": 300, "momentum": 0.9, "optimizer": "sgd", "post_train_epochs": 0, "weight_decay": 0.0}, "train_size": 30, "train_status": "fitted"}',3.96640050003043143078e-02,'2026-12-07T05:46:11+00:00');
INSERT INTO "runs" VALUES('04348e91c6a81851','sgd',0,1,'aa62566399d15ea8','done',NULL,'ep-orthant','{"alpha_events": [], "attack_size": 0, "batch_size": 32, "classes": "0-4v5-9", "data_seed": 0, "device": "cpu", "epochs": 28, "fitted_at": 28, "flatvol_version": "0.1.0", "last_iterate": {"test_acc_E": 0.5333333333333333, "train_acc_A": null, "train_acc_S": 1.0}, "lr": 0.05, "measured_model": "final", "measures": {"accuracy": {"seconds": 0.0002}, "volume": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "kernel": {"cache_key": "9375527d38e369fc", "kind": "analytic", "n": 60, "seconds": 0.001}, "log10_volume": -15.770532565553012, "log_marginal_likelihood_nats": -36.31299319401951, "message": "", "n": 60, "n_samples": null, "proposal": null, "seconds": 0.0079, "stderr_log10": null, "train": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "log10_volume": -10.242614759962809, "log_marginal_likelihood_nats": -23.58449205957115, "message": "", "n": 30, "n_samples": null, "proposal": null, "seconds": 0.008400483000514214, "stderr_log10": null}}}, "model": "fcn:8", "optimizer_label": "sgd", "optimizer_name": "sgd", "optimizer_options": {}, "prior": {"sigma_b2": 1.0, "sigma_w2": 2.0}, "seconds": 0.025, "seed": 1, "task": "mnist", "test_size": 30, "torch_version": "2.13.0+cpu", "train": {"batch_size": 32, "fit": "S", "lr": 0.05, "max_epochs": 300, "momentum": 0.9, "optimizer": "sgd", "post_train_epochs": 0, "weight_decay": 0.0}, "train_size": 30, "train_status": "fitted"}',2.47693169985723216086e-02,'2026-12-07T05:46:11+00:00');
INSERT INTO "runs" VALUES('04348e91c6a81851','sgd',10,1,'aa62566399d15ea8','done',NULL,'ep-orthant','{"alpha_events": [], "attack_size": 10, "batch_size": 32, "classes": "0-4v5-9", "data_seed": 0, "device": "cpu", "epochs": 13, "fitted_at": 13, "flatvol_version": "0.1.0", "last_iterate": {"test_acc_E": 0.5, "train_acc_A": 0.9, "train_acc_S": 1.0}, "lr": 0.05, "measured_model": "final", "measures": {"accuracy": {"seconds": 0.0002}, "volume": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "kernel": {"cache_key": "9375527d38e369fc", "kind": "analytic", "n": 60, "seconds": 0.001}, "log10_volume": -17.190471413761355, "log_marginal_likelihood_nats": -39.58252321886717, "message": "", "n": 60, "n_samples": null, "proposal": null, "seconds": 0.0074, "stderr_log10": null, "train": {"converged": true, "effective_sample_size": null, "estimator": "ep-orthant", "iterations": 4, "jitter": 0.0, "log10_volume": -10.242614759962809, "log_marginal_likelihood_nats": -23.58449205957115, "message": "", "n": 30, "n_samples": null, "proposal": null, "seconds": 0.008400483000514214, "stderr_log10": null}}}, "model": "fcn:8", "optimizer_label": "sgd", "optimizer_name": "sgd", "optimizer_options": {}, "prior": {"sigma_b2": 1.0, "sigma_w2": 2.0}, "seconds": 0.022, "seed": 1, "task": "mnist", "test_size": 30, "torch_version": "2.13.0+cpu", "train": {"batch_size": 32, "fit": "S", "lr": 0.05, "max_epochs": 300, "momentum": 0.9, "optimizer": "sgd", "post_train_epochs": 0, "weight_decay": 0.0}, "train_size": 30, "train_status": "fitted"}',2.17000279990315902978e-02,'2026-12-07T05:46:11+00:00');
CREATE TABLE series (
    spec_hash   TEXT NOT NULL,
    optimizer   TEXT NOT NULL,
    attack_size INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    phase       TEXT NOT NULL,
    metric      TEXT NOT NULL,
    value       REAL,
    UNIQUE (spec_hash, optimizer, attack_size, seed, epoch, phase, metric)
);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,1,'fit','loss',1.287876129150390625e+00);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,1,'fit','train_acc_S',4.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,1,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,2,'fit','loss',8.25049340724945068359e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,2,'fit','train_acc_S',5.66666666666666651863e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,2,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,3,'fit','loss',7.35140621662139892578e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,3,'fit','train_acc_S',5.66666666666666651863e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,3,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,4,'fit','loss',7.02088117599487304687e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,4,'fit','train_acc_S',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,4,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,5,'fit','loss',6.72679841518402099609e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,5,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,5,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,6,'fit','loss',6.46676898002624511718e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,6,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,6,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,7,'fit','loss',6.23727917671203613281e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,7,'fit','train_acc_S',7.66666666666666718477e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,7,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,8,'fit','loss',6.0321241617202758789e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,8,'fit','train_acc_S',7.66666666666666718477e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,8,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,9,'fit','loss',5.84529340267181396484e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,9,'fit','train_acc_S',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,9,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,10,'fit','loss',5.67544639110565185546e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,10,'fit','train_acc_S',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,10,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,11,'fit','loss',5.51271617412567138671e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,11,'fit','train_acc_S',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,11,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,12,'fit','loss',5.358180999755859375e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,12,'fit','train_acc_S',8.3333333333333337034e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,12,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,13,'fit','loss',5.21012127399444580078e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,13,'fit','train_acc_S',8.3333333333333337034e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,13,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,14,'fit','loss',5.0678354501724243164e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,14,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,14,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,15,'fit','loss',4.9308833479881286621e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,15,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,15,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,16,'fit','loss',4.79917466640472412109e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,16,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,16,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,17,'fit','loss',4.67242777347564697265e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,17,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,17,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,18,'fit','loss',4.55032467842102050781e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,18,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,18,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,19,'fit','loss',4.43226248025894165039e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,19,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,19,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,20,'fit','loss',4.3182569742202758789e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,20,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,20,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,21,'fit','loss',4.20910328626632690429e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,21,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,21,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,22,'fit','loss',4.10501748323440551757e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,22,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,22,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,23,'fit','loss',4.00505453348159790039e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,23,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,23,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,24,'fit','loss',3.8873061537742614746e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,24,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,24,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,25,'fit','loss',3.77500027418136596679e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,25,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,25,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,26,'fit','loss',3.66728991270065307617e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,26,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,26,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,27,'fit','loss',3.56299608945846557617e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,27,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,27,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,28,'fit','loss',3.46347987651824951171e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,28,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,28,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,29,'fit','loss',0.336785227060318);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,29,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,29,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,30,'fit','loss',3.2758668065071105957e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,30,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,30,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,31,'fit','loss',3.1863930821418762207e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,31,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,31,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,32,'fit','loss',3.1005725264549255371e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,32,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,32,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,33,'fit','loss',3.01928907632827758789e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,33,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,33,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,34,'fit','loss',2.94209271669387817382e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,34,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,34,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,35,'fit','loss',2.86376446485519409179e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,35,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,35,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,36,'fit','loss',2.79016077518463134765e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,36,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,36,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,37,'fit','loss',2.71951317787170410156e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,37,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,37,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,38,'fit','loss',2.6511579751968383789e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,38,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,38,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,39,'fit','loss',2.58454710245132446289e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,39,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,39,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,40,'fit','loss',2.52079427242279052734e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,40,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,40,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,41,'fit','loss',2.45619505643844604492e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,41,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,41,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,42,'fit','loss',2.39434018731117248535e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,42,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,42,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,43,'fit','loss',2.33454376459121704101e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,43,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,43,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,44,'fit','loss',2.27850660681724548339e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,44,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,44,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,45,'fit','loss',2.22121760249137878417e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,45,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,45,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,46,'fit','loss',0.21665059030056);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,46,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,46,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,47,'fit','loss',2.11435556411743164062e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,47,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,47,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,48,'fit','loss',2.06422582268714904785e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,48,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,48,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,49,'fit','loss',2.01545283198356628417e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,49,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,49,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,50,'fit','loss',1.96924060583114624023e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,50,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,50,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,51,'fit','loss',1.92368596792221069335e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,51,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,51,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,52,'fit','loss',1.87901258468627929687e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,52,'fit','train_acc_S',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,52,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,0,52,'fit','zero_error_epoch',52.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,1,'fit','loss',1.20808273553848266601e+00);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,1,'fit','train_acc_S',4.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,1,'fit','train_acc_A',0.2);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,2,'fit','loss',7.54863572120666459497e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,2,'fit','train_acc_S',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,2,'fit','train_acc_A',0.3);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,3,'fit','loss',7.26302874088287309106e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,3,'fit','train_acc_S',5.66666666666666651863e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,3,'fit','train_acc_A',0.4);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,4,'fit','loss',0.692553699016571);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,4,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,4,'fit','train_acc_A',0.5);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,5,'fit','loss',6.56932497024536155016e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,5,'fit','train_acc_S',5.66666666666666651863e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,5,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,6,'fit','loss',6.37491273880004927221e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,6,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,6,'fit','train_acc_A',0.5);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,7,'fit','loss',6.22944486141204789575e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,7,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,7,'fit','train_acc_A',0.5);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,8,'fit','loss',6.02273559570312477795e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,8,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,8,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,9,'fit','loss',5.94103181362152121813e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,9,'fit','train_acc_S',6.33333333333333303727e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,9,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,10,'fit','loss',6.23693025112152077404e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,10,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,10,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,11,'fit','loss',5.69121885299682661596e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,11,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,11,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,12,'fit','loss',5.42004787921905539782e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,12,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,12,'fit','train_acc_A',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,13,'fit','loss',5.32187938690185546875e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,13,'fit','train_acc_S',7.66666666666666718477e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,13,'fit','train_acc_A',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,14,'fit','loss',5.18065142631530806127e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,14,'fit','train_acc_S',8.3333333333333337034e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,14,'fit','train_acc_A',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,15,'fit','loss',4.87815016508102439196e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,15,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,15,'fit','train_acc_A',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,16,'fit','loss',4.77803122997283946649e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,16,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,16,'fit','train_acc_A',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,17,'fit','loss',4.71464717388153098376e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,17,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,17,'fit','train_acc_A',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,18,'fit','loss',4.46401345729827869757e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,18,'fit','train_acc_S',7.66666666666666718477e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,18,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,19,'fit','loss',4.51424205303192160876e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,19,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,19,'fit','train_acc_A',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,20,'fit','loss',4.1248037815093996361e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,20,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,20,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,21,'fit','loss',0.396262925863266);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,21,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,21,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,22,'fit','loss',3.81074476242065418585e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,22,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,22,'fit','train_acc_A',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,23,'fit','loss',3.76564753055572520867e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,23,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,23,'fit','train_acc_A',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,24,'fit','loss',3.63193422555923461914e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,24,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,24,'fit','train_acc_A',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,25,'fit','loss',3.62424671649932861328e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,25,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,25,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,26,'fit','loss',3.30083620548248302117e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,26,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,26,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,27,'fit','loss',3.17800837755203235968e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,27,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,27,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,28,'fit','loss',3.07768160104751609118e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,28,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,28,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,29,'fit','loss',2.97988259792327903063e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,29,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,29,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,30,'fit','loss',2.99420779943466164318e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,30,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,30,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,31,'fit','loss',2.80514079332351673468e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,31,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,31,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,32,'fit','loss',2.80158424377441428454e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,32,'fit','train_acc_S',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,32,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,0,32,'fit','zero_error_epoch',32.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,1,'fit','loss',1.01294374465942382812e+00);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,1,'fit','train_acc_S',5.33333333333333325931e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,1,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,2,'fit','loss',6.97096765041351318359e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,2,'fit','train_acc_S',6.33333333333333303727e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,2,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,3,'fit','loss',6.48406267166137695312e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,3,'fit','train_acc_S',6.66666666666666629659e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,3,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,4,'fit','loss',6.12869799137115478515e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,4,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,4,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,5,'fit','loss',5.81002831459045410156e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,5,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,5,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,6,'fit','loss',0.552487313747406);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,6,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,6,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,7,'fit','loss',5.27104318141937255859e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,7,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,7,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,8,'fit','loss',5.03921985626220703125e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,8,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,8,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,9,'fit','loss',0.482284277677536);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,9,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,9,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,10,'fit','loss',4.62122410535812377929e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,10,'fit','train_acc_S',7.66666666666666718477e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,10,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,11,'fit','loss',4.43231523036956787109e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,11,'fit','train_acc_S',8.3333333333333337034e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,11,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,12,'fit','loss',4.2546132206916809082e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,12,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,12,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,13,'fit','loss',4.08825039863586425781e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,13,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,13,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,14,'fit','loss',3.93301218748092651367e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,14,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,14,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,15,'fit','loss',3.78790974617004394531e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,15,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,15,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,16,'fit','loss',3.64567905664443969726e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,16,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,16,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,17,'fit','loss',3.51408094167709350585e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,17,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,17,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,18,'fit','loss',3.3889871835708618164e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,18,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,18,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,19,'fit','loss',3.27029198408126831054e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,19,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,19,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,20,'fit','loss',3.15815627574920654296e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,20,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,20,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,21,'fit','loss',3.05114686489105224609e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,21,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,21,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,22,'fit','loss',2.95090466737747192382e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,22,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,22,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,23,'fit','loss',2.85402268171310424804e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,23,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,23,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,24,'fit','loss',2.76339352130889892578e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,24,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,24,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,25,'fit','loss',2.6750138401985168457e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,25,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,25,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,26,'fit','loss',2.59086132049560546875e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,26,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,26,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,27,'fit','loss',0.251064270734787);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,27,'fit','train_acc_S',9.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,27,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,28,'fit','loss',2.4349650740623474121e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,28,'fit','train_acc_S',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,28,'fit','train_acc_A',NULL);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',0,1,28,'fit','zero_error_epoch',28.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,1,'fit','loss',9.61579561233520507812e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,1,'fit','train_acc_S',4.66666666666666674068e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,1,'fit','train_acc_A',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,2,'fit','loss',0.70958993434906);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,2,'fit','train_acc_S',6.66666666666666629659e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,2,'fit','train_acc_A',0.3);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,3,'fit','loss',6.46231102943420454565e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,3,'fit','train_acc_S',6.33333333333333303727e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,3,'fit','train_acc_A',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,4,'fit','loss',0.616295337677002);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,4,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,4,'fit','train_acc_A',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,5,'fit','loss',5.65186947584152221679e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,5,'fit','train_acc_S',0.7);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,5,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,6,'fit','loss',5.4428284168243412644e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,6,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,6,'fit','train_acc_A',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,7,'fit','loss',5.35156071186065673828e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,7,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,7,'fit','train_acc_A',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,8,'fit','loss',4.87696206569671608654e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,8,'fit','train_acc_S',7.33333333333333281522e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,8,'fit','train_acc_A',0.6);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,9,'fit','loss',5.17937254905700639184e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,9,'fit','train_acc_S',8.66666666666666696272e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,9,'fit','train_acc_A',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,10,'fit','loss',4.25701630115509044305e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,10,'fit','train_acc_S',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,10,'fit','train_acc_A',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,11,'fit','loss',4.16524159908294666632e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,11,'fit','train_acc_S',9.33333333333333348136e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,11,'fit','train_acc_A',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,12,'fit','loss',4.01666414737701427117e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,12,'fit','train_acc_S',8.3333333333333337034e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,12,'fit','train_acc_A',0.8);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,13,'fit','loss',4.25042814016342140881e-01);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,13,'fit','train_acc_S',1.0);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,13,'fit','train_acc_A',0.9);
INSERT INTO "series" VALUES('04348e91c6a81851','sgd',10,1,13,'fit','zero_error_epoch',13.0);
CREATE TABLE specs (
    spec_hash   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    path        TEXT,
    source_text TEXT,
    created_at  TEXT NOT NULL
);
INSERT INTO "specs" VALUES('04348e91c6a81851','digest-fixture','{
  "alpha_events": [],
  "data": {
    "classes": null,
    "data_seed": 0,
    "task": "mnist",
    "test_size": 30,
    "train_size": 30
  },
  "description": "",
  "during": {
    "every": 0,
    "measures": [],
    "phases": [
      "fit",
      "post"
    ]
  },
  "measures": {
    "final": [
      "volume"
    ],
    "options": {},
    "sharpness": {
      "epsilon": 0.0001,
      "maximizer": "fast",
      "options": {}
    },
    "volume": {
      "estimator": "ep-orthant",
      "kernel": "auto",
      "mc_batchnorm": "eval",
      "mc_max_samples": 4096,
      "mc_samples": 100,
      "mc_seed": 0,
      "mc_tolerance": 0.5,
      "options": {}
    }
  },
  "model": {
    "arch": "fcn:8",
    "sigma_b2": 1.0,
    "sigma_w2": 2.0
  },
  "name": "digest-fixture",
  "optimizers": [
    {
      "batch_size": null,
      "label": null,
      "lr": null,
      "max_epochs": null,
      "momentum": null,
      "name": "sgd",
      "options": {},
      "post_train_epochs": null,
      "swa": null,
      "weight_decay": null
    }
  ],
  "sweep": {
    "attack_sizes": [
      0,
      10
    ],
    "seeds": 2
  },
  "train": {
    "batch_size": 32,
    "ensemble": false,
    "fit": "S",
    "history": true,
    "lr": 0.05,
    "max_epochs": 300,
    "momentum": 0.9,
    "post_train_epochs": 0,
    "weight_decay": 0.0
  }
}',NULL,NULL,'2026-12-07T05:46:11+00:00');
COMMIT;
