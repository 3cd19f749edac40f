// Command manifest-check decodes Kubernetes manifests strictly into the upstream API types
// (k8s.io/api): every field must exist in the object's schema and have the right type, so
// a misspelt or misplaced field fails here instead of at `kubectl apply`. It also checks
// what statefun needs of a StatefulSet: a headless Service of the same name, parallel pod
// management, `-n` equal to `replicas`, and a volume claim for the state dir.
//
//	go run . ../../deploy/kubernetes/*.yaml
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: manifest-check FILE.yaml...")
		os.Exit(2)
	}
	failed := false
	services := map[string]*corev1.Service{}
	var sets []*appsv1.StatefulSet
	for _, path := range os.Args[1:] {
		text, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		for i, doc := range bytes.Split(text, []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var h header
			if err := yaml.Unmarshal(doc, &h); err != nil {
				fmt.Fprintf(os.Stderr, "%s: document %d: %v\n", path, i+1, err)
				failed = true
				continue
			}
			var obj interface{}
			switch h.APIVersion + "/" + h.Kind {
			case "v1/Service":
				obj = &corev1.Service{}
			case "v1/ConfigMap":
				obj = &corev1.ConfigMap{}
			case "v1/Secret":
				obj = &corev1.Secret{}
			case "apps/v1/StatefulSet":
				s := &appsv1.StatefulSet{}
				obj = s
				sets = append(sets, s)
			default:
				fmt.Fprintf(os.Stderr, "%s: document %d: kind %s/%s is not checked here\n", path, i+1, h.APIVersion, h.Kind)
				failed = true
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				fmt.Fprintf(os.Stderr, "%s: document %d (%s): %v\n", path, i+1, h.Kind, err)
				failed = true
				continue
			}
			if svc, ok := obj.(*corev1.Service); ok {
				services[svc.Name] = svc
			}
			fmt.Printf("%s: document %d: %s %s: schema ok\n", path, i+1, h.APIVersion, h.Kind)
		}
	}
	for _, s := range sets {
		for _, problem := range checkStatefulSet(s, services) {
			fmt.Fprintf(os.Stderr, "StatefulSet %s: %s\n", s.Name, problem)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func checkStatefulSet(s *appsv1.StatefulSet, services map[string]*corev1.Service) []string {
	var problems []string
	if svc, ok := services[s.Spec.ServiceName]; !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		problems = append(problems, fmt.Sprintf("serviceName %q must name a headless Service (clusterIP: None) in the same files, so that pods have stable DNS names", s.Spec.ServiceName))
	}
	if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		problems = append(problems, "podManagementPolicy must be Parallel: every process of a timely cluster must start before any can run")
	}
	replicas := int32(1)
	if s.Spec.Replicas != nil {
		replicas = *s.Spec.Replicas
	}
	for _, c := range s.Spec.Template.Spec.Containers {
		args := append(append([]string{}, c.Command...), c.Args...)
		n := ""
		for i, a := range args {
			if (a == "-n" || a == "--processes") && i+1 < len(args) {
				n = args[i+1]
			}
		}
		if n != fmt.Sprint(replicas) {
			problems = append(problems, fmt.Sprintf("container %s: -n is %q but replicas is %d", c.Name, n, replicas))
		}
		if !contains(args, "--process-from-hostname") {
			problems = append(problems, fmt.Sprintf("container %s: without --process-from-hostname every pod would be process 0", c.Name))
		}
		hosts := ""
		for i, a := range args {
			if a == "--hosts" && i+1 < len(args) {
				hosts = args[i+1]
			}
		}
		if c.ReadinessProbe != nil {
			if svc, ok := services[s.Spec.ServiceName]; ok && !svc.Spec.PublishNotReadyAddresses {
				problems = append(problems, fmt.Sprintf("container %s has a readinessProbe but Service %q lacks publishNotReadyAddresses: true: pods get DNS names only once ready, and become ready only once they found each other", c.Name, svc.Name))
			}
		}
		if !strings.Contains(hosts, s.Name+"-{i}."+s.Spec.ServiceName) {
			problems = append(problems, fmt.Sprintf("container %s: --hosts %q should name the pods through the headless Service (%s-{i}.%s:PORT)", c.Name, hosts, s.Name, s.Spec.ServiceName))
		}
	}
	if len(s.Spec.VolumeClaimTemplates) == 0 {
		problems = append(problems, "no volumeClaimTemplates: each pod needs its own volume for --state-dir")
	}
	return problems
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
